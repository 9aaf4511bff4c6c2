"""Every ```python snippet of README.md runs as written: in order, in one namespace (a later snippet
may use what an earlier one defined, as a reader would), in a temporary working directory, against
the loopback TGI and Hub servers and the tiny local model. Nothing is downloaded and nothing is
written into ~/.cache.

The only edits are these documented substitutions (README.md points here):

====================================================  ===============================================
in the README                                          replaced by
====================================================  ===============================================
``http://tgi:8080``                                    the loopback TGI-protocol server's URL
``meta-llama/...`` (any model id of that org)          a tiny random Llama with a local tokenizer
``../shared/seeds/longbench-train-1.6k``               the first 4 seeds of 3 of its tasks
``default_sft_config(..., max_length=32768)``          ``default_sft_config(..., max_length=2048,
                                                       max_steps=2)`` (two optimizer steps on a CPU)
``32768`` (other sequence lengths)                     ``2048`` (CPU-sized)
``data/longbench`` (LongBench test data)               a small folder in LongBench's jsonl format
Hub repos ``you/...``                                  the loopback Hub (``HF_ENDPOINT``), token set
====================================================  ===============================================
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOKEN = "hf_" + secrets.token_hex(16)


def python_snippets(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block."""
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        out.append((text[: m.start()].count("\n") + 2, m.group(1)))
    return out


def substitute(code: str, values: dict[str, str]) -> str:
    """Apply the documented substitutions (see the module docstring)."""
    code = re.sub(r"(default_sft_config\([^()]*?)max_length=32768\)", r"\1max_length=2048, max_steps=2)", code)
    if "meta-llama/" in values:
        code = re.sub(r"meta-llama/[\w.\-]+", lambda _m: values["meta-llama/"], code)
    for old, new in values.items():
        if old != "meta-llama/":
            code = code.replace(old, new)
    return code


def test_substitutions_are_the_documented_ones():
    code = 'args = default_sft_config("out", max_length=32768)\npack(ds, max_length=32768)'
    assert substitute(code, {"32768": "2048"}) == (
        'args = default_sft_config("out", max_length=2048, max_steps=2)\npack(ds, max_length=2048)'
    )


def test_snippet_extraction_finds_the_readme_examples():
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    assert len(snippets) >= 4
    code = "\n".join(c for _, c in snippets)
    assert "load_dataset(" in code and "push_model_to_hub(" in code
    # save before pushing: the pushed folder must be one trainer.save_model wrote
    assert code.index("save_model(") < code.index("push_model_to_hub(")


@pytest.fixture
def longbench_dir(tmp_path: Path) -> Path:
    out = tmp_path / "longbench"
    out.mkdir()
    rows = [
        {"input": "Which river flows past the mill?", "context": "The mill stands by the Wendle river. " * 20,
         "answers": ["the Wendle"], "length": 140, "all_classes": None, "_id": f"lb-{i}"}
        for i in range(2)
    ]
    (out / "hotpotqa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return out


def test_every_readme_python_snippet_runs(tmp_path, monkeypatch, seeds_dir, tiny_model_dir, longbench_dir):
    import datasets
    from huggingface_hub import constants

    from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for task in ("hotpotqa", "qasper", "2wikiqa"):
        lines = (seeds_dir / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()[:4]
        (seeds / f"{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    with FakeTGIServer(latency=0.0, capacity=8) as tgi, FakeHubServer(token=TOKEN, write_namespaces={"you"}) as hub:
        values = {
            "http://tgi:8080": tgi.url,
            "meta-llama/": tiny_model_dir,
            "../shared/seeds/longbench-train-1.6k": str(seeds),
            "32768": "2048",
            "data/longbench": str(longbench_dir),
        }
        namespace: dict = {"__name__": "__readme__"}
        with hub_endpoint(hub.url):
            for line, code in snippets:
                compiled = compile(substitute(code, values), f"README.md:{line}", "exec")
                start = time.perf_counter()
                exec(compiled, namespace)  # noqa: S102 - the README's own code
                print(f"README.md:{line} ran in {time.perf_counter() - start:.1f}s")
            # what the snippets claim happened, happened
            ds = namespace["ds"]
            assert len(ds) == 12 and {"messages", "relevant_index", "num_tokens"} <= set(ds.column_names)
            assert tgi.stats().generation_requests == 12
            assert (work / "out" / "llama-cs" / "config.json").is_file()
            assert hub.files("you/llama-cs")["README.md"]
            assert len(datasets.load_dataset("you/context-synthesis-1.6k", split="train")) == 12
            # the claims next to the load_dataset snippet: the report is in ds.info.description and in
            # <cache_dir>/context_synthesis/reports/<config_id>.json; a second load makes zero requests
            assert "Synthesis report:" in ds.info.description
            reports = list((home / "datasets" / "context_synthesis" / "reports").glob("*.json"))
            assert len(reports) == 1 and json.loads(reports[0].read_text())["requested"] == 12
            line, first = snippets[0]
            exec(compile(substitute(first, values), f"README.md:{line}", "exec"), dict(namespace))  # noqa: S102
            assert tgi.stats().generation_requests == 12


def test_tests_never_write_into_the_user_cache():
    """conftest points every cache at a temporary folder before datasets/huggingface_hub are imported."""
    import datasets
    import huggingface_hub.constants as constants

    user_cache = (Path.home() / ".cache").resolve()
    for path in (datasets.config.HF_DATASETS_CACHE, constants.HF_HUB_CACHE, constants.HF_HOME):
        assert user_cache not in Path(path).resolve().parents, path


def test_setup_command_2_is_what_ci_runs():
    """The README's set-up command 2 (the tests) is the command .ci/run executes (it only adds -q to pip)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n# 2\. run the tests[^\n]*\n(?P<cmd>[^\n]+)\n```", text)
    assert block, "README set-up command 2 not found"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("pip install")]
    assert len(ci) == 1
    assert ci[0].replace("pip install -q ", "pip install ") == block.group("cmd").strip()
    assert len(re.findall(r"```bash\n# [12]\. ", text)) == 2  # exactly two set-up commands


def test_every_readme_command_line_parses():
    """Every `context-synthesis ...` command in the README's bash blocks uses real subcommands and flags
    (parsed, not run; lines with `...` elisions and what follows a `#` are left out)."""
    import shlex

    from hf_context_synthesis.cli import build_parser

    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if "context-synthesis " in line or line == "context-synthesis":
                commands.append(line[line.index("context-synthesis"):])
    assert len(commands) >= 8
    parsed = 0
    for command in commands:
        argv = shlex.split(command)[1:]
        if "..." in argv:
            continue
        parser = build_parser(only=argv[0])
        args, extras = parser.parse_known_args(argv)
        assert extras == [], f"{command}: unknown {extras}"
        assert args.command == argv[0]
        parsed += 1
    assert parsed >= 8
