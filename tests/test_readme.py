"""Every ```python and ```bash block of README.md and docs/*.md runs as written, in a temporary working
directory, against the loopback TGI, OpenAI-protocol and Hub servers and the tiny local model. Nothing is
downloaded and nothing is written into ~/.cache (docs/development.md describes this for readers).

Order and namespaces: README.md first, its ```python blocks in order in one namespace (a later snippet
may use what an earlier one defined, as a reader would); then every docs/*.md page in alphabetical
order, each in a copy of the README's namespace (a page may use the README's ``ds``, ``model`` and
``tokenizer``). ```bash blocks run where they stand: a line that is a ``context-synthesis`` command
runs through ``hf_context_synthesis.cli.main`` (the console script's entry point) in this process and
must return 0; any other line runs in ``bash``. After each page, ``PAGE_CHECKS`` asserts what the text
around its snippets claims.

Skipped blocks: a block right after ``<!-- not-run: REASON -->`` is not run (it downloads, needs a GPU
or is a long run). Every skipped block is printed with its reason, ``NOT_RUN`` fixes how many each page
has, and their ``context-synthesis`` lines are still parsed with the real parser.

The only edits are these documented substitutions:

====================================================  ===============================================
in the docs                                            replaced by
====================================================  ===============================================
``http://tgi:8080``                                    the loopback TGI-protocol server's URL
``http://vllm:8000``                                   a loopback OpenAI-protocol server listing
                                                       ``Qwen/Qwen2.5-7B-Instruct`` and
                                                       ``Qwen/Qwen2.5-72B-Instruct``
``meta-llama/...`` (any model id of that org)          a tiny random Llama with a local tokenizer
``../shared/seeds/longbench-train-1.6k``               the first 4 seeds of 3 of its tasks
``default_sft_config(..., max_length=32768)``          ``default_sft_config(..., max_length=2048,
                                                       max_steps=2)`` (two optimizer steps on a CPU)
``32768`` (other sequence lengths)                     ``2048`` (CPU-sized)
``data/longbench-v2`` (LongBench v2 test data)         a folder with a 2-question ``data.json``
``data/longbench`` (LongBench test data)               a small folder in LongBench's jsonl format, and
                                                       its ``data.zip``
Hub repos ``you/...``                                  the loopback Hub (``HF_ENDPOINT``), token set
====================================================  ===============================================
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TOKEN = "hf_" + secrets.token_hex(16)
VLLM_MODELS = ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct")

#: How many blocks each page marks ``<!-- not-run: ... -->``; pages not listed have none.
NOT_RUN = {
    "README.md": 5,
    "docs/cli.md": 1,
    "docs/evaluation.md": 1,
    "docs/generator-model.md": 3,
    "docs/resume.md": 1,
    "docs/training.md": 2,
}

_BLOCK = re.compile(r"^(?:<!-- not-run: (?P<reason>[^\n]*?) -->\n)?```(?P<lang>python|bash)\n(?P<code>.*?)^```",
                    flags=re.S | re.M)


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_run: str | None


def pages() -> list[Path]:
    """README.md, then docs/*.md in alphabetical order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(path: Path) -> list[Block]:
    """Every ```python / ```bash block of one page, with its not-run reason (``None``: it runs)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        line = text[: m.start("lang")].count("\n") + 2
        reason = m.group("reason")
        out.append(Block(page_name(path), line, m.group("lang"), m.group("code"),
                         None if reason is None else reason.strip()))
    return out


def substitute(code: str, values: dict[str, str]) -> str:
    """Apply the documented substitutions (see the module docstring), in the order of ``values``."""
    code = re.sub(r"(default_sft_config\([^()]*?)max_length=32768\)", r"\1max_length=2048, max_steps=2)", code)
    if "meta-llama/" in values:
        code = re.sub(r"meta-llama/[\w.\-]+", lambda _m: values["meta-llama/"], code)
    for old, new in values.items():
        if old != "meta-llama/":
            code = code.replace(old, new)
    return code


def bash_lines(code: str) -> list[str]:
    """The commands of a ```bash block: continuation lines joined, comments and blank lines left out."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.strip())
    return out


def run_bash(code: str, where: str, cwd: Path) -> None:
    """Run one ```bash block (see the module docstring); every command must succeed."""
    from hf_context_synthesis.cli import main

    for line in bash_lines(code):
        argv = shlex.split(line, comments=True)
        start = time.perf_counter()
        if argv[0] == "context-synthesis":
            try:
                rc = main(argv[1:])
            except SystemExit as exc:  # argparse errors
                rc = exc.code
            assert rc == 0, f"{where}: `{line}` exited {rc}"
        else:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, capture_output=True, text=True)
            assert proc.returncode == 0, f"{where}: `{line}` exited {proc.returncode}: {proc.stderr[-2000:]}"
        print(f"{where}: `{argv[0]} {argv[1] if len(argv) > 1 else ''}` ran in {time.perf_counter() - start:.1f}s")


def test_substitutions_are_the_documented_ones():
    code = 'args = default_sft_config("out", max_length=32768)\npack(ds, max_length=32768)'
    assert substitute(code, {"32768": "2048"}) == (
        'args = default_sft_config("out", max_length=2048, max_steps=2)\npack(ds, max_length=2048)'
    )
    values = {"data/longbench-v2": "/v2", "data/longbench": "/v1"}
    assert substitute("--data-dir data/longbench-v2/data.json data/longbench/data.zip", values) == (
        "--data-dir /v2/data.json /v1/data.zip"
    )


def test_snippet_extraction_finds_the_readme_examples():
    readme = [b for b in blocks(README) if b.lang == "python"]
    assert len(readme) == 1  # the one end-to-end snippet
    code = readme[0].code
    assert "load_dataset(" in code and "build_trainer(" in code and "push_model_to_hub(" in code
    # save before pushing: the pushed folder must be one trainer.save_model wrote
    assert code.index("save_model(") < code.index("push_model_to_hub(")
    every = [b for p in pages() for b in blocks(p)]
    assert sum(b.lang == "python" for b in every) >= 8 and sum(b.lang == "bash" for b in every) >= 10


def test_skipped_blocks_are_marked_counted_and_explained(capsys):
    """Nothing is skipped silently: every not-run marker sits right before a block, names a reason, and
    the number per page is the one NOT_RUN expects."""
    counts: dict[str, int] = {}
    for path in pages():
        text = path.read_text(encoding="utf-8")
        marked = [b for b in blocks(path) if b.not_run is not None]
        assert len(re.findall(r"^<!-- not-run:", text, flags=re.M)) == len(marked), (
            f"{page_name(path)}: a <!-- not-run: ... --> marker is not directly followed by a ```python/```bash block")
        for b in marked:
            assert len(b.not_run) >= 10, f"{b.page}:{b.line}: not-run needs a reason"
            print(f"not run: {b.page}:{b.line} ({b.lang}): {b.not_run}")
        if marked:
            counts[page_name(path)] = len(marked)
    assert counts == NOT_RUN
    assert "not run: README.md:" in capsys.readouterr().out


@pytest.fixture
def longbench_dir(tmp_path: Path) -> Path:
    out = tmp_path / "longbench"
    out.mkdir()
    rows = [
        {"input": "Which river flows past the mill?", "context": "The mill stands by the Wendle river. " * 20,
         "answers": ["the Wendle"], "length": 140, "all_classes": None, "_id": f"lb-{i}"}
        for i in range(2)
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    (out / "hotpotqa.jsonl").write_text(text, encoding="utf-8")
    with zipfile.ZipFile(out / "data.zip", "w") as archive:  # LongBench's archive layout: data/<task>.jsonl
        archive.writestr("data/hotpotqa.jsonl", text)
    return out


@pytest.fixture
def longbench_v2_dir(tmp_path: Path) -> Path:
    out = tmp_path / "longbench-v2"
    out.mkdir()
    questions = [
        {"_id": f"q{i}", "domain": "Single-Document QA", "sub_domain": "Academic", "difficulty": "easy",
         "length": "short", "question": f"Which option is right for question {i}?", "choice_A": "alpha",
         "choice_B": "beta", "choice_C": "gamma", "choice_D": "delta", "answer": "A",
         "context": f"The document of question {i}. " * 5}
        for i in range(2)
    ]
    (out / "data.json").write_text(json.dumps(questions), encoding="utf-8")
    return out


def _check_readme(ns: dict, ctx: SimpleNamespace) -> None:
    import datasets

    ds = ns["ds"]
    assert len(ds) == 12 and {"messages", "relevant_index", "num_tokens"} <= set(ds.column_names)
    assert ctx.tgi.stats().generation_requests == 12
    assert (ctx.work / "out" / "llama-cs" / "config.json").is_file()
    assert ctx.hub.files("you/llama-cs")["README.md"]
    assert len(datasets.load_dataset("you/context-synthesis-1.6k", split="train")) == 12
    # the claims under the snippet: the report is in ds.info.description and in
    # <cache_dir>/context_synthesis/reports/<config_id>.json
    assert "Synthesis report:" in ds.info.description
    reports = list((ctx.home / "datasets" / "context_synthesis" / "reports").glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["requested"] == 12


def _check_synthesis(ns: dict, ctx: SimpleNamespace) -> None:
    # "a second load_dataset with the same settings makes zero requests"
    assert len(ns["ds"]) == 12 and ctx.requests_made() == 0


def _check_generator_model(ns: dict, ctx: SimpleNamespace) -> None:
    small, large = ns["small"], ns["large"]
    assert set(small["generator"]) == {VLLM_MODELS[0]} and set(large["generator"]) == {VLLM_MODELS[1]}
    assert ctx.vllm.stats().generation_requests == 24  # another model: every context generated again
    # the served id passed as --generator-model: the same cache, zero requests
    assert ctx.requests_made() == 0
    report = json.loads((ctx.work / "out" / "by-name" / "synthesis_report.json").read_text())
    assert report["requested"] == report["cached"] == 12


def _check_resume(ns: dict, ctx: SimpleNamespace) -> None:
    # the first run generated 12 into out/gens, the rerun took all 12 from the cache
    assert ctx.requests_made() == 12
    report = json.loads((ctx.work / "out" / "ds" / "synthesis_report.json").read_text())
    assert (report["requested"], report["cached"], report["generated"]) == (12, 12, 0)
    assert ns["last"] == str(Path("out") / "resumable" / "checkpoint-2")  # the newest of checkpoint-1, -2
    assert (ctx.work / ns["last"]).is_dir() and (ctx.work / "out" / "resumable" / "checkpoint-1").is_dir()


def _check_evaluation(ns: dict, ctx: SimpleNamespace) -> None:
    assert "hotpotqa" in json.loads((ctx.work / "out" / "eval" / "result.json").read_text())
    assert (ctx.work / "out" / "eval" / "hotpotqa.jsonl").is_file()
    assert (ctx.work / "out" / "eval-v2" / "result.json").is_file()


def _check_training(ns: dict, ctx: SimpleNamespace) -> None:
    assert (ctx.work / "out" / "llama-cs" / "config.json").is_file() and ctx.requests_made() == 0


PAGE_CHECKS: dict[str, Callable[[dict, SimpleNamespace], None]] = {
    "README.md": _check_readme,
    "docs/synthesis.md": _check_synthesis,
    "docs/generator-model.md": _check_generator_model,
    "docs/resume.md": _check_resume,
    "docs/evaluation.md": _check_evaluation,
    "docs/training.md": _check_training,
}


def test_every_doc_snippet_runs(tmp_path, monkeypatch, seeds_dir, tiny_model_dir, longbench_dir, longbench_v2_dir):
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
    ran = {"python": 0, "bash": 0}
    checked = []
    with FakeTGIServer(latency=0.0, capacity=8) as tgi, \
            FakeTGIServer(protocol="openai", model_id=VLLM_MODELS[0], served_models=VLLM_MODELS) as vllm, \
            FakeHubServer(token=TOKEN, write_namespaces={"you"}) as hub:
        values = {
            "http://tgi:8080": tgi.url,
            "http://vllm:8000": vllm.url,
            "meta-llama/": tiny_model_dir,
            "../shared/seeds/longbench-train-1.6k": str(seeds),
            "32768": "2048",
            "data/longbench-v2": str(longbench_v2_dir),
            "data/longbench": str(longbench_dir),
        }
        readme_namespace: dict = {}
        with hub_endpoint(hub.url):
            for path in pages():
                name = page_name(path)
                namespace = {"__name__": "__readme__"} if path == README else dict(readme_namespace)
                before = tgi.stats().generation_requests
                ctx = SimpleNamespace(tgi=tgi, vllm=vllm, hub=hub, work=work, home=home,
                                      requests_made=lambda b=before: tgi.stats().generation_requests - b)
                for block in blocks(path):
                    if block.not_run is not None:
                        continue
                    where = f"{name}:{block.line}"
                    code = substitute(block.code, values)
                    start = time.perf_counter()
                    if block.lang == "python":
                        exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
                        print(f"{where} ran in {time.perf_counter() - start:.1f}s")
                    else:
                        run_bash(code, where, work)
                    ran[block.lang] += 1
                if name in PAGE_CHECKS:
                    PAGE_CHECKS[name](namespace, ctx)
                    checked.append(name)
                if path == README:
                    readme_namespace = namespace
    print(f"ran {ran['python']} python and {ran['bash']} bash blocks; claims checked for {checked}")
    assert checked[0] == "README.md" and sorted(checked) == sorted(PAGE_CHECKS)  # every checked page ran
    assert ran["python"] >= 7 and ran["bash"] >= 4


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
    """Every `context-synthesis ...` command in the bash blocks of README.md and docs/*.md, run or not,
    uses real subcommands and flags (parsed; lines with `...` elisions and what follows a `#` are left out)."""
    from hf_context_synthesis.cli import build_parser

    commands = []
    for path in pages():
        for block in blocks(path):
            if block.lang != "bash":
                continue
            for line in block.code.splitlines():
                line = line.split(" #", 1)[0].strip()
                if "context-synthesis " in line or line == "context-synthesis":
                    commands.append(line[line.index("context-synthesis"):])
    assert len(commands) >= 12
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
    assert parsed >= 12
