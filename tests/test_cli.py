"""The ``context-synthesis`` command line as a user meets it: help for every flag (from the field docs),
--version, "did you mean", one-line first-run errors that leave nothing behind, --dry-run, local cards,
quiet logging, and the offline demo recipe end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import pytest
from conftest import write_seed_subset
import yaml

from hf_context_synthesis.cli import build_parser, configure_logging, main
from hf_context_synthesis.utils.fields import field_docs, plain_text
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

TASKS = ("hotpotqa", "qasper")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory, seeds_dir) -> Path:
    return write_seed_subset(seeds_dir, tmp_path_factory.mktemp("seeds"), TASKS, 3)


@pytest.fixture(scope="module")
def tgi():
    with FakeTGIServer(latency=0.0, capacity=8) as server:
        yield server


def test_every_flag_of_every_subcommand_has_help():
    subs = _subparsers(build_parser())
    assert {"synthesize", "merge", "train", "evaluate", "push-dataset", "push-model", "run", "demo"} <= set(subs)
    for name, sub in subs.items():
        missing = [a.option_strings or a.dest for a in sub._actions if not (a.help or "").strip()]
        assert missing == [], f"{name}: flags without help {missing}"
        sub.format_help()  # every help string formats (no stray %)


def test_synthesize_help_is_the_field_docs_with_defaults_and_choices(capsys):
    from hf_context_synthesis.synthesis.config import SynthesisConfig

    with pytest.raises(SystemExit) as exc:
        main(["synthesize", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docs(SynthesisConfig)
    for f in dataclasses.fields(SynthesisConfig):
        first_words = " ".join(plain_text(docs[f.name]).split()[:6])
        assert first_words in text, f.name  # the help is the field's doc: they cannot drift
    assert "[default: 2000]" in text  # context_words
    assert "choices: uniform, beginning, middle, end" in text  # relevant_position (a Literal)


def test_train_help_shows_effective_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: 2e-05]" in text and "[default: cosine]" in text


def test_version_and_plain_description(capsys):
    from hf_context_synthesis import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    description = build_parser().description
    assert "``" not in description and ":class:" not in description


def test_unknown_flag_gets_a_suggestion_and_writes_nothing(tmp_path, capsys, seed_folder):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["synthesize", "--seed", str(seed_folder), "--output", str(out), "--max-seed", "2"])
    assert exc.value.code == 2
    assert "did you mean --max-seeds" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("synthesis.max_seed=2", "did you mean synthesis.max_seeds"),
        ("training.lerning_rate=0.1", "did you mean training.learning_rate"),
        ("evaluaton.limit=1", "did you mean evaluation?"),
    ],
)
def test_unknown_recipe_setting_gets_a_suggestion_before_any_file(tmp_path, capsys, seed_folder, override, expected):
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(out), "synthesis": {"seed": str(seed_folder)}}))
    assert main(["run", str(recipe), "--set", override]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_model_that_cannot_be_downloaded_is_one_error_line_per_problem_and_no_folder(tmp_path, capfd, monkeypatch,
                                                                                      seed_folder):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "output_dir": str(out),
        "synthesis": {"seed": str(seed_folder), "generator_model": "no-such-org/no-such-model"},
        "training": {"model": "no-such-org/no-such-model"},
    }))
    assert main(["run", str(recipe)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    # every problem of the run at once, one line each: the generator, the base model, nothing to evaluate
    assert err[0] == "error: recipe found 3 problems:" and len(err) == 4, err
    line = next(e for e in err if e.startswith("  - synthesis.generator_model: "))
    for needle in ("no-such-org/no-such-model", "synthesize", "HF_HUB_OFFLINE", "local folder",
                   "--set synthesis.generator_model="):
        assert needle in line, needle
    assert any(e.startswith("  - training.model: ") and "no-such-org/no-such-model" in e for e in err)
    assert any(e.startswith("  - evaluation.data_dir: ") for e in err)
    assert not out.exists()


def test_synthesize_dry_run_then_run_writes_card_and_plot(tmp_path, capsys, seed_folder, tgi):
    out = tmp_path / "data"
    cache = tmp_path / "cache"
    common = ["synthesize", "--seed", str(seed_folder), "--endpoint", tgi.url, "--output", str(out),
              "--generation-cache-dir", str(cache), "--num-distractors", "1", "--context-words", "150",
              "--progress", "false"]
    before = tgi.stats().generation_requests
    assert main([*common, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "hotpotqa  3" in plan and "qasper    3" in plan
    assert "requests: 6 to make, 0 already cached" in plan
    assert "estimated tokens" in plan and "README.md" in plan
    assert tgi.stats().generation_requests == before and not out.exists() and not cache.exists()

    assert main(common) == 0
    assert tgi.stats().generation_requests == before + 6
    card = (out / "README.md").read_text()
    assert (out / "length_histogram.png").stat().st_size > 1000
    assert "about two thousand words" not in card
    assert "150 words asked for" in card and "words measured" in card
    assert "Made with [hf-context-synthesis](https://pypi.org/project/hf-context-synthesis/)" in card
    # the local card's usage snippet runs as written: load_dataset(<the folder>) finds the shards via its configs
    import datasets

    assert f'load_dataset("{out.as_posix()}", split="train")' in card
    assert len(datasets.load_dataset(out.as_posix(), split="train")) == 6
    capsys.readouterr()
    assert main([*common, "--dry-run"]) == 0  # the same settings again: everything is cached
    assert "requests: 0 to make, 6 already cached" in capsys.readouterr().out

    # push-dataset --dry-run lists the upload without any Hub (none is running)
    assert main(["push-dataset", str(out), "you/data", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    for name in ("README.md", "data/train-00000-of-00001.parquet", "length_histogram.png"):
        assert name in listing


def test_logging_levels_and_quiet_third_parties():
    parser = build_parser(only="")
    configure_logging(parser.parse_args(["synthesize", "--seed", "s", "--output", "o"]))
    assert logging.getLogger("hf_context_synthesis").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING  # no request lines
    assert logging.getLogger("huggingface_hub").propagate is False  # its warnings print once
    configure_logging(parser.parse_args(["-q", "synthesize", "--seed", "s", "--output", "o"]))
    assert logging.getLogger("hf_context_synthesis").getEffectiveLevel() == logging.WARNING
    configure_logging(parser.parse_args(["synthesize", "--seed", "s", "--output", "o", "-v"]))
    assert logging.getLogger("hf_context_synthesis").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    configure_logging(parser.parse_args(["-vv", "synthesize", "--seed", "s", "--output", "o"]))
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    configure_logging(parser.parse_args(["synthesize", "--seed", "s", "--output", "o"]))


def test_offline_demo_recipe_end_to_end(tmp_path, capsys, caplog):
    """The documented demo: tiny model + loopback TGI, nothing downloaded; then re-runs of single steps
    accumulate recipe_result.json, and `run --resume` continues from the last checkpoint."""
    from hf_context_synthesis.cli.demo import run_demo

    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "-q"]) == 0
    assert "demo outputs in" in capsys.readouterr().out
    assert len(list((out / "dataset" / "data").glob("*.parquet"))) == 1
    assert (out / "dataset" / "README.md").is_file() and (out / "dataset" / "length_histogram.png").is_file()
    state = json.loads((out / "model" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 6  # one per logged step: the loss curve exists
    assert (out / "model" / "training_loss.png").stat().st_size > 1000
    assert "![Training loss](training_loss.png)" in (out / "model" / "README.md").read_text()
    first = json.loads((out / "recipe_result.json").read_text())
    assert first["synthesis_report"]["requested"] == 16 and first["model_dir"]
    assert sorted(first["eval_scores"]) == [f"holdout/{t}" for t in ("govreport", "hotpotqa", "narrativeqa", "qasper")]

    # resume: two more steps from checkpoint-6; the result keeps the synthesis report of the first run
    caplog.set_level(logging.INFO, logger="hf_context_synthesis")
    run_demo(output_dir=str(out), steps=["train"], overrides=["training.max_steps=8", "training.resume_from_checkpoint=last"])
    assert any("continuing from" in r.getMessage() and "checkpoint-6" in r.getMessage() for r in caplog.records)
    state = json.loads((out / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    second = json.loads((out / "recipe_result.json").read_text())
    assert second["synthesis_report"] == first["synthesis_report"]
    assert second["eval_scores"] == first["eval_scores"]

    # `train` on its own writes the same local artefacts (flag names: TRL's where the CLI has them)
    options = {s for a in _subparsers(build_parser(only="train"))["train"]._actions for s in a.option_strings}
    name = lambda trl, ours: trl if trl in options else ours  # noqa: E731
    model_out = tmp_path / "model-cli"
    assert main(["train", name("--model_name_or_path", "--model"), str(out / "tiny-model"),
                 name("--dataset_name", "--dataset"), str(out / "dataset"), ("--output" if "--output" in options else "--output_dir"),
                 str(model_out), "--max_steps", "2", "--max_length", "1024", "--use_cpu", "true",
                 "--save_strategy", "no", "--report_to", "none", "--activation_checkpointing", "false", "-q"]) == 0
    assert len(json.loads((model_out / "trainer_state.json").read_text())["log_history"]) >= 2
    assert (model_out / "README.md").is_file() and (model_out / "training_loss.png").is_file()
    capsys.readouterr()
    assert main(["push-model", str(model_out), "you/model", "--dry-run"]) == 0  # no Hub is running
    listing = capsys.readouterr().out
    for name in ("README.md", "model.safetensors", "config.json", "training_loss.png", "trainer_state.json"):
        assert name in listing, name


def test_synthesis_bar_shows_tokens_per_second_and_keeps_cache_hits_out_of_the_rate(tmp_path, capfd, seed_folder, tgi):
    from datasets import enable_progress_bars

    from hf_context_synthesis.utils.progress import RequestProgress

    enable_progress_bars()  # the bars follow datasets' switch: make sure it is on
    args = ["synthesize", "--seed", str(seed_folder), "--endpoint", tgi.url, "--output", str(tmp_path / "d"),
            "--generation-cache-dir", str(tmp_path / "c"), "--num-distractors", "1"]
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "Synthesizing contexts" in err and "tok/s out" in err and "6/6" in err
    assert main(args) == 0  # everything cached now
    assert "6 cached" in capfd.readouterr().err

    bar = RequestProgress(total=10, desc="t")
    with bar.from_cache():
        bar.update(4)
    bar.update(1)
    assert bar.bar.n == 5 and bar.bar.initial == 4  # tqdm's rate counts the one real request only
    bar.close()


def test_evaluation_and_context_dependence_have_progress_bars(tmp_path, capfd, tiny_model_dir):
    from datasets import enable_progress_bars

    from hf_context_synthesis.evaluation.context_dependence import context_dependence_scores

    enable_progress_bars()
    data = tmp_path / "longbench"
    data.mkdir()
    row = {"input": "Which river?", "context": "The mill stands by the Wendle. " * 5, "answers": ["the Wendle"],
           "length": 30, "all_classes": None, "_id": "x"}
    (data / "hotpotqa.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "_id": "y"}) + "\n")
    assert main(["evaluate", "--model", tiny_model_dir, "--data-dir", str(data), "--output-dir", str(tmp_path / "e"),
                 "--max-length", "512"]) in (0, 1)
    assert "LongBench hotpotqa: 100%" in capfd.readouterr().err.replace("|", "")
    rows = [{"context": "The mill stands by the Wendle.", "instruction": "Which river?", "answer": "the Wendle"}] * 3
    scores = context_dependence_scores(rows, tiny_model_dir, batch_size=2)
    err = capfd.readouterr().err
    assert len(scores) == 3 and "Context dependence: with context" in err and "without context" in err


def test_http_request_lines_only_with_vv(tmp_path, seed_folder, tgi):
    """A real push (to the loopback Hub, in a subprocess so the CLI owns stderr): no httpx request
    lines at the default level, request lines with -vv."""
    import os
    import secrets
    import subprocess
    import sys

    from hf_context_synthesis.testing.fake_hub import FakeHubServer

    token = "hf_" + secrets.token_hex(16)
    data = tmp_path / "d"
    assert main(["synthesize", "--seed", str(seed_folder), "--endpoint", tgi.url, "--output", str(data),
                 "--generation-cache-dir", str(tmp_path / "c"), "--num-distractors", "1", "--progress", "false"]) == 0
    with FakeHubServer(token=token, write_namespaces={"ctx"}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        cmd = [sys.executable, "-m", "hf_context_synthesis.cli", "push-dataset", str(data)]
        quiet = subprocess.run([*cmd, "ctx/a"], env=env, capture_output=True, text=True, timeout=120)
        loud = subprocess.run([*cmd, "ctx/b", "-vv"], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "pushed dataset ctx/a" in quiet.stdout
    assert "HTTP Request" not in quiet.stderr
    assert "HTTP Request" in loud.stderr


def test_train_config_file_typo_gets_a_suggestion(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"lerning_rate": 0.1}))
    assert main(["train", "--config", str(config)]) == 2
    assert "did you mean learning_rate?" in capsys.readouterr().err


def test_unreachable_endpoint_on_a_first_run_leaves_no_output_folder(tmp_path, capsys, seed_folder):
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(out), "synthesis": {"seed": str(seed_folder),
                                                                            "endpoint": "http://127.0.0.1:9"}}))
    assert main(["run", str(recipe), "--steps", "synthesize"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and err.count("\n") == 1
    assert not out.exists()  # not even the (empty) generation cache folder


def test_huggingface_hub_and_datasets_warnings_print_once():
    import subprocess
    import sys

    code = (
        "import logging, argparse\n"
        "from hf_context_synthesis.cli import configure_logging\n"
        "import huggingface_hub, datasets\n"
        "configure_logging(argparse.Namespace(verbose=0, quiet=0, log_level='INFO'))\n"
        "logging.getLogger('huggingface_hub.file_download').warning('hub-warning-xyz')\n"
        "logging.getLogger('datasets.load').warning('datasets-warning-xyz')\n"
        "logging.getLogger('hf_context_synthesis.recipe').info('our-info-xyz')\n"
        "logging.getLogger('httpx').info('HTTP Request: GET x')\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stderr
    assert err.count("hub-warning-xyz") == 1 and err.count("datasets-warning-xyz") == 1
    assert err.count("our-info-xyz") == 1 and "HTTP Request" not in err


def test_evaluate_checks_its_inputs_first(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["evaluate", "--model", "no-such-org/m", "--data-dir", str(tmp_path / "missing"),
                 "--output-dir", str(tmp_path / "e")]) == 1
    assert "--data-dir" in capsys.readouterr().err
    (tmp_path / "lb").mkdir()
    assert main(["evaluate", "--model", "no-such-org/m", "--data-dir", str(tmp_path / "lb"),
                 "--output-dir", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "no-such-org/m" in err and "HF_HUB_OFFLINE" in err and not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- flag spellings and short errors
#: per subcommand: the arguments it needs besides the output folder, and the attribute the folder lands in
OUTPUT_FLAG_CASES = {
    "synthesize": (["--seed", "s"], "output"),
    "merge": (["--seed", "s", "--shard-cache", "c.sqlite"], "output"),
    "train": ([], "output_dir"),
    "evaluate": (["--model", "m", "--data-dir", "d"], "output_dir"),
    "run": (["r.yaml"], "output_dir"),
    "demo": ([], "output_dir"),
}


@pytest.mark.parametrize("command", sorted(OUTPUT_FLAG_CASES))
@pytest.mark.parametrize("flag", ["--output", "--output-dir", "--output_dir"])
def test_every_subcommand_takes_its_output_folder_under_both_names(command, flag):
    rest, dest = OUTPUT_FLAG_CASES[command]
    args = build_parser(only=command).parse_args([command, *rest, flag, "somewhere"])
    # train keeps TRL's --output_dir next to its own --output (train_from_args merges the two)
    got = getattr(args, dest, None) if command != "train" else (getattr(args, "output", None) or getattr(args, "output_dir", None))
    assert got == "somewhere"


def test_output_alias_is_documented_once_in_help():
    for command in ("synthesize", "evaluate", "demo", "run"):
        text = _subparsers(build_parser(only=command))[command].format_help()
        assert "--output DIR, --output-dir DIR" in text, command
        assert "--output_dir" not in text  # the underscore spelling is a hidden alias


@pytest.mark.parametrize("flag", ["--data-dir", "--data_dir"])
def test_evaluate_takes_data_dir_in_both_spellings(flag):
    args = build_parser(only="evaluate").parse_args(["evaluate", "--model", "m", flag, "lb", "--output", "o",
                                                     "--max_length", "7", "--batch-size", "2"])
    assert args.data_dir == "lb" and args.max_length == 7 and args.batch_size == 2


def test_run_output_flag_overrides_the_recipe_output_dir(tmp_path, capsys, seed_folder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "from-recipe"), "synthesis": {"seed": str(seed_folder)}}))
    chosen = tmp_path / "chosen: here"
    assert main(["run", str(recipe), "--output-dir", str(chosen), "--steps", "synthesize", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert str(chosen) in plan and "from-recipe" not in plan


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["synthesize", "--seed", "s", "--outpt", "x"], "error: unknown flag --outpt; did you mean --output?"),
        (["evaluate", "--model", "m", "--data-dir", "d", "--ouput-dir", "x"],
         "error: unknown flag --ouput-dir; did you mean --output-dir?"),
        (["train", "--max-step", "3"], "error: unknown flag --max-step; did you mean --max-steps?"),
        (["run", "r.yaml", "--stpes", "train"], "error: unknown flag --stpes; did you mean --steps?"),
    ],
)
def test_a_typo_is_one_short_error_before_any_required_flag_error(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [expected, f"(see 'context-synthesis {argv[0]} --help' for every flag)"]


def test_other_argument_errors_are_short_too(capsys):
    with pytest.raises(SystemExit):
        main(["synthesize", "--seed", "s"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the following arguments are required: --output/--output-dir",
                   "(see 'context-synthesis synthesize --help' for every flag)"]


# --------------------------------------------------------------------------- -q and the run's log file
def _train_args(model: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", model, "--dataset", str(data), "--output", str(out), "--max_steps", "2",
            "--logging_steps", "1", "--max_length", "1024", "--use_cpu", "true", "--save_strategy", "no",
            "--report_to", "none", "--activation_checkpointing", "false", *extra]


def test_quiet_silences_progress_bars_and_trainer_step_dicts(tmp_path, capfd, seed_folder, tgi, tiny_model_dir):
    from datasets import enable_progress_bars
    from datasets.utils.logging import is_progress_bar_enabled

    enable_progress_bars()
    synth = ["synthesize", "--seed", str(seed_folder), "--endpoint", tgi.url, "--generation-cache-dir",
             str(tmp_path / "c"), "--num-distractors", "1"]
    assert main([*synth, "--output", str(tmp_path / "loud-data")]) == 0
    loud = capfd.readouterr()
    assert "Synthesizing contexts" in loud.err and "%|" in loud.err  # the bar is there without -q
    assert main([*synth, "--output", str(tmp_path / "data"), "-q"]) == 0
    quiet = capfd.readouterr()
    assert "%|" not in quiet.err and "Synthesizing contexts" not in quiet.err, quiet.err
    assert "seeds: 6 read" in quiet.out  # the summary is still printed
    assert is_progress_bar_enabled()  # -q held for that command only

    assert main(_train_args(tiny_model_dir, tmp_path / "data", tmp_path / "loud-model")) == 0
    loud = capfd.readouterr()
    assert "'loss':" in loud.out + loud.err and "%|" in loud.err  # step dicts and bars without -q
    assert main(_train_args(tiny_model_dir, tmp_path / "data", tmp_path / "model", "-q")) == 0
    quiet = capfd.readouterr()
    assert "'loss':" not in quiet.out + quiet.err and "grad_norm" not in quiet.out + quiet.err
    assert "%|" not in quiet.err and "it/s]" not in quiet.err, quiet.err
    assert "Trained 2 steps" in quiet.out
    # the step dicts are not lost: they are in the log file (and trainer_state.json)
    log = (tmp_path / "model" / "context-synthesis.log").read_text()
    assert "step 1: {'loss':" in log and "step 2: {'loss':" in log


def test_each_run_folder_gets_a_log_file_at_info_with_debug_under_v_and_tokens_redacted(
        tmp_path, capfd, seed_folder, tgi, tiny_model_dir, monkeypatch):
    import secrets

    token = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", token)  # a token in play: redacted wherever it would appear
    data = tmp_path / "data"
    synth = ["synthesize", "--seed", str(seed_folder), "--endpoint", tgi.url, "--generation-cache-dir",
             str(tmp_path / "c"), "--num-distractors", "1", "--progress", "false"]
    assert main([*synth, "--output", str(data), "-q"]) == 0
    log = (data / "context-synthesis.log").read_text()
    # INFO of this package although -q kept the console to warnings
    assert " INFO hf_context_synthesis" in log and " DEBUG " not in log
    assert "context-synthesis synthesize" in log.splitlines()[0]  # the command line heads it
    assert main([*synth, "--output", str(data)]) == 0  # a rerun appends to the same log, below its own header
    again = (data / "context-synthesis.log").read_text()
    assert again.startswith(log) and again.count("context-synthesis (hf-context-synthesis)") == 2

    # train -v: DEBUG lines too; a token that reaches a log line is redacted
    model = tmp_path / "model"
    assert main(_train_args(tiny_model_dir, data, model, "-v", "--run_name", f"run-{token}")) == 0
    log = (model / "context-synthesis.log").read_text()
    assert " DEBUG hf_context_synthesis" in log
    assert "--run_name run-" in log.splitlines()[0] and token not in log  # the command line, redacted
    # a run refused at its checks changes nothing in the folder, its log included
    before = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}
    assert main(_train_args(tiny_model_dir, data, model, "--packing", "true")) == 2
    assert {p.name: p.stat().st_mtime_ns for p in model.iterdir()} == before

    # evaluate writes its log into its --output folder; a dry run or a first run that fails writes none
    longbench = tmp_path / "longbench"
    longbench.mkdir()
    row = {"input": "Which river?", "context": "The mill stands by the Wendle. " * 5, "answers": ["the Wendle"],
           "length": 30, "all_classes": None, "_id": "x"}
    (longbench / "hotpotqa.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["evaluate", "--model", tiny_model_dir, "--data-dir", str(longbench), "--output", str(tmp_path / "e"),
                 "--max-length", "512"]) in (0, 1)
    assert "LongBench" in (tmp_path / "e" / "context-synthesis.log").read_text()
    assert main([*synth, "--output", str(tmp_path / "dry"), "--dry-run"]) == 0
    assert not (tmp_path / "dry").exists()
    capfd.readouterr()


# --------------------------------------------------------------------------- set-up problems all at once
SETUP_CASES = {
    # command -> (argv with {tmp} and {dead}, the settings every one of which must be named)
    "synthesize": (["synthesize", "--seed", "{seeds}", "--output", "{tmp}/out", "--endpoint", "{dead}",
                    "--context-words", "-5", "--num-distractors", "-1"],
                   ["context_words", "num_distractors", "--endpoint"]),
    "merge": (["merge", "--seed", "{seeds}", "--output", "{tmp}/out", "--max-seeds", "-3",
               "--shard-cache", "{tmp}/a.sqlite", "{tmp}/b.sqlite"],
              ["max_seeds", "a.sqlite", "b.sqlite"]),
    "train": (["train", "--model", "{tmp}/no-model", "--dataset", "{seeds}", "--packing", "true",
               "--padding_free", "true"],
              ["--packing", "--padding_free", "--output", "--model"]),
    "evaluate": (["evaluate", "--model", "{tmp}/no-model", "--data-dir", "{tmp}/no-data", "--output", "{tmp}/e",
                  "--cot", "--limit", "0"],
                 ["--cot", "--limit", "--data-dir", "--model"]),
    "push-model": (["push-model", "{tmp}/no-model", "you/x/y", "--eval-results", "{tmp}/none.json"],
                   ["DIR", "REPO_ID", "--eval-results"]),
}


@pytest.mark.parametrize("command", sorted(SETUP_CASES))
def test_every_setup_problem_of_a_command_is_listed_at_once(command, tmp_path, capsys, monkeypatch, seed_folder):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv, settings = SETUP_CASES[command]
    argv = [a.format(tmp=tmp_path, seeds=seed_folder, dead="http://127.0.0.1:9") for a in argv]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {command} found {len(settings)} problems:", err
    assert len(err) == 1 + len(settings)
    for setting, line in zip(settings, err[1:]):
        assert line.startswith("  - ") and setting in line, (setting, line)
    assert not (tmp_path / "out").exists() and not (tmp_path / "e").exists()  # nothing written
