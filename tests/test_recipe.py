"""The whole method through ``context-synthesis run``: synthesize (loopback TGI) -> train (tiny Llama,
packing) -> evaluate (held-out examples in LongBench format) -> push (loopback Hub)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from conftest import write_seed_subset
import yaml

from hf_context_synthesis.recipe import RecipeConfig, load_recipe, split_holdout, training_job
from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

TOKEN = "hf_" + secrets.token_hex(16)
TASKS = ("hotpotqa", "qasper")


def _seed_folder(seeds_dir: Path, out: Path, per_task: int = 4) -> Path:
    return write_seed_subset(seeds_dir, out, TASKS, per_task)


def test_load_recipe_overrides_and_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "synthesis": {"seed": "s"}, "training": {}}))
    recipe = load_recipe(path, ["synthesis.endpoint=http://tgi:8080", "training.max_steps=7", "hub.private=true"])
    assert recipe.synthesis == {"seed": "s", "endpoint": "http://tgi:8080"}
    assert recipe.training == {"max_steps": 7} and recipe.hub == {"private": True}
    with pytest.raises(ValueError, match="section.key=value"):
        load_recipe(path, ["no-equals-sign"])
    path.write_text(yaml.safe_dump({"output_dir": "x", "trainng": {}}))
    with pytest.raises(ValueError, match="unknown recipe sections"):
        load_recipe(path)
    path.write_text(yaml.safe_dump({"synthesis": {}}))
    with pytest.raises(ValueError, match="output_dir is required"):
        load_recipe(path)


def test_training_section_splits_into_job_and_sft_config(tmp_path):
    recipe = RecipeConfig(
        output_dir=str(tmp_path),
        training={"model": "m", "max_length": 2048, "loss_weighting": "example", "learning_rate": 3e-4, "max_steps": 4},
    )
    job, sft = training_job(recipe, "data")
    assert (job.model, job.dataset, job.loss_weighting) == ("m", "data", "example")
    assert job.output == str(tmp_path / "model") and sft.output_dir == str(tmp_path / "model")
    assert sft.learning_rate == 3e-4 and sft.max_steps == 4 and sft.max_length == 2048
    assert sft.dataset_kwargs == {"skip_prepare_dataset": True}
    with pytest.raises(ValueError, match="unknown settings"):
        training_job(RecipeConfig(output_dir=str(tmp_path), training={"lerning_rate": 1}), "data")


def test_recipe_end_to_end_through_the_cli(tmp_path, seeds_dir, tiny_model_dir, monkeypatch):
    import datasets
    from huggingface_hub import constants

    from hf_context_synthesis.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    seeds = _seed_folder(seeds_dir, tmp_path / "seeds")
    run = tmp_path / "run"
    recipe = {
        "output_dir": str(run),
        "synthesis": {"seed": str(seeds), "num_distractors": 2, "random_seed": 7, "progress": False},
        "training": {
            "model": tiny_model_dir,
            "max_length": 1024,
            "max_steps": 2,
            "learning_rate": 1e-3,
            "activation_checkpointing": False,
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            "report_to": "none",
        },
        "evaluation": {"holdout_per_task": 1, "limit": 1, "max_length": 512, "batch_size": 2},
        "hub": {"dataset_repo_id": "ctx-user/synth", "model_repo_id": "ctx-user/tuned"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with FakeTGIServer(latency=0.0, capacity=8) as tgi, FakeHubServer(token=TOKEN, write_namespaces={"ctx-user"}) as hub:
        with hub_endpoint(hub.url):
            rc = main(["run", str(path), "--set", f"synthesis.endpoint={tgi.url}"])
            assert rc == 0
            assert tgi.stats().generation_requests == 2 * 4  # one context per seed
            # synthesize: 8 composed rows; 1 per task held out of training, in LongBench format
            result = json.loads((run / "recipe_result.json").read_text())
            assert result["synthesis_report"]["requested"] == 8
            holdout = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in (run / "holdout").glob("*.jsonl")}
            assert sorted(holdout) == sorted(TASKS) and all(len(v) == 1 for v in holdout.values())
            train = datasets.load_dataset("parquet", data_files=str(run / "train_data" / "data" / "*.parquet"), split="train")
            assert len(train) == 6
            held_ids = {r["_id"] for v in holdout.values() for r in v}
            assert held_ids.isdisjoint(train["seed_id"])
            for records in holdout.values():
                rec = records[0]
                assert rec["answers"][0] in rec["context"] or rec["answers"][0].split()[0] in rec["context"]
            # train: the tuned model and its summary
            assert list((run / "model").glob("*.safetensors"))
            summary = json.loads((run / "model" / "context_synthesis_training.json").read_text())
            assert summary["global_step"] == 2 and summary["packing_stats"]["source_rows"] == 6
            # evaluate: one score per held-out task
            assert sorted(result["eval_scores"]) == sorted(f"holdout/{t}" for t in TASKS)
            assert all(0.0 <= s <= 100.0 for s in result["eval_scores"].values())
            assert list((run / "eval" / "holdout").iterdir())
            # honest label: the held-out check is never called LongBench
            held_md = (run / "eval" / "holdout" / "results.md").read_text()
            assert "not LongBench" in held_md and "held-out synthesized (hotpotqa template)" in held_md
            # push: both repos exist and read back
            assert result["dataset_commit"] and result["model_commit"]
            pushed = datasets.load_dataset("ctx-user/synth", split="train")
            assert len(pushed) == 8 and sorted(pushed["seed_id"]) == sorted(
                datasets.load_dataset("parquet", data_files=str(run / "dataset" / "data" / "*.parquet"), split="train")["seed_id"]
            )
            from huggingface_hub import HfApi

            files = HfApi().list_repo_files("ctx-user/tuned")
            assert "README.md" in files and any(f.endswith(".safetensors") for f in files)
            card = HfApi().hf_hub_download("ctx-user/tuned", "README.md")
            assert "ctx-user/synth" in Path(card).read_text()
            # the loss curve the README promises: trainer_state.json is written next to the model, so the
            # pushed card shows the curve; the local card and dataset card exist before any push
            assert "training_loss.png" in files and "trainer_state.json" in files
            assert "![Training loss](training_loss.png)" in Path(card).read_text()
            assert (run / "model" / "README.md").is_file() and (run / "dataset" / "README.md").is_file()
            assert "length_histogram.png" in HfApi().list_repo_files("ctx-user/synth", repo_type="dataset")


def test_split_holdout_is_deterministic_and_keeps_a_training_row_per_task(tmp_path):
    import datasets

    from hf_context_synthesis.synthesis.schema import ROW_FEATURES

    rows = []
    for task in ("a", "b"):
        for i in range(3 if task == "a" else 1):
            doc = f"Doc {task}{i} says {task}-answer-{i}."
            content = f"Read.\n\n{doc}\n\nQ?"
            rows.append(
                {
                    "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": f"{task}-answer-{i}"}],
                    "task": task, "instruction": "Q?", "answer": f"{task}-answer-{i}", "relevant_context": doc,
                    "relevant_index": 0, "context_spans": [[content.index(doc), content.index(doc) + len(doc)]], "num_documents": 1, "num_tokens": 10,
                    "generator": "g", "seed_id": f"{task}/{i}",
                }
            )
    features = datasets.Features({k: v for k, v in ROW_FEATURES.items() if k in rows[0]})
    src = tmp_path / "ds"
    (src / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(src / "data" / "train-00000-of-00001.parquet"))
    picks = []
    for attempt in range(2):
        n = split_holdout(src, 2, 5, tmp_path / f"train{attempt}", tmp_path / f"hold{attempt}")
        assert n == 2  # task a gives 2 of 3; task b (one row) keeps its only row for training
        picks.append((tmp_path / f"hold{attempt}" / "a.jsonl").read_text())
        assert not (tmp_path / f"hold{attempt}" / "b.jsonl").exists()
        rec = json.loads(picks[-1].splitlines()[0])
        assert rec["context"].startswith("Doc a") and rec["answers"][0] in rec["context"]
    assert picks[0] == picks[1]


@pytest.mark.parametrize("name", ["paper.yaml", "smoke_cpu.yaml", "offline_demo.yaml"])
def test_shipped_recipes_are_valid(name, tmp_path):
    """Every key of the shipped recipes is a real setting (synthesis config, training job or SFTConfig)."""
    from hf_context_synthesis.recipe import synthesis_config, validate_recipe

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / name
    overrides = [f"output_dir={tmp_path}"] + (["training.model=tiny"] if name == "offline_demo.yaml" else [])
    recipe = load_recipe(path, overrides)
    validate_recipe(recipe)
    config = synthesis_config(recipe)
    config.validate()
    job, sft = training_job(recipe, "data")
    assert sft.dataset_kwargs == {"skip_prepare_dataset": True} and job.model
    if name == "paper.yaml":  # the paper's setup
        assert config.num_distractors == 9 and config.context_words == 2000
        assert sft.learning_rate == 2e-5 and sft.num_train_epochs == 2 and sft.max_length == 32768
        assert sft.warmup_steps == 0.03
        assert str(getattr(sft.lr_scheduler_type, "value", sft.lr_scheduler_type)) == "cosine"


def test_cli_reports_an_unreachable_model_in_one_line(tmp_path, monkeypatch, capsys):
    """Offline, a model id that is not cached gives one 'error:' line and exit 1, not a traceback."""
    from huggingface_hub import constants

    from hf_context_synthesis.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: the env var is too late
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "hotpotqa.jsonl").write_text('{"input": "q", "context": "c", "answers": ["a"], "length": 1, "all_classes": null}\n')
    rc = main(["evaluate", "--model", "no-such-org/no-such-model", "--data-dir", str(data), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "Traceback" not in err


def test_preflight_refuses_a_push_without_a_token_before_anything_runs(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hf_context_synthesis.synthesis.plan import RunSetupError
    from hf_context_synthesis.recipe import preflight

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(RunSetupError, match="no synthesized data"):
        preflight(RecipeConfig(output_dir=str(tmp_path / "run"), hub={"dataset_repo_id": "you/d", "token": "x"}), ["push"])
    assert not (tmp_path / "run").exists()
    recipe = RecipeConfig(output_dir=str(tmp_path / "run"), hub={"dataset_repo_id": "you/d"})
    (recipe.dataset_dir / "data").mkdir(parents=True)
    (recipe.dataset_dir / "data" / "train-00000-of-00001.parquet").write_bytes(b"")
    with pytest.raises(RunSetupError, match="no Hub token"):
        preflight(recipe, ["push"])


def test_preflight_checks_the_longbench_data_path(tmp_path):
    from hf_context_synthesis.synthesis.plan import RunSetupError
    from hf_context_synthesis.recipe import preflight

    def recipe(data_dir: str) -> RecipeConfig:
        return RecipeConfig(output_dir=str(tmp_path / "run"), evaluation={"data_dir": data_dir, "endpoint": "http://x"})

    with pytest.raises(RunSetupError, match="not a folder of LongBench"):
        preflight(recipe(str(tmp_path / "missing")), ["evaluate"])
    (tmp_path / "bad.zip").write_bytes(b"PK")  # the archive is probed: one that does not open is refused
    with pytest.raises(RunSetupError, match="not a zip archive"):
        preflight(recipe(str(tmp_path / "bad.zip")), ["evaluate"])
    import zipfile

    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("data/hotpotqa.jsonl", '{"input": "q", "context": "c", "answers": ["a"]}\n')
    preflight(recipe(str(tmp_path / "data.zip")), ["evaluate"])  # a data.zip is accepted
    with FakeHubServer() as hub, hub_endpoint(hub.url):  # so is a Hub dataset id the Hub has
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.url, token="hf_test")
        api.create_repo("THUDM/LongBench", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"{}\n", path_in_repo="data/hotpotqa.jsonl", repo_id="THUDM/LongBench",
                        repo_type="dataset")
        preflight(recipe("THUDM/LongBench"), ["evaluate"])
    assert not (tmp_path / "run").exists()


def test_run_exit_code_follows_the_one_rule(tmp_path, seeds_dir):
    """A recipe whose synthesis lost one seed completed: exit 0; --fail-on-failures makes it 1."""
    from hf_context_synthesis.cli import main

    seeds = _seed_folder(seeds_dir, tmp_path / "seeds")
    for flag, expected in (([], 0), (["--fail-on-failures"], 1)):
        run = tmp_path / f"run{expected}"
        recipe = {"output_dir": str(run),
                  "synthesis": {"seed": str(seeds), "num_distractors": 2, "progress": False,
                                "max_generation_attempts": 1}}
        path = tmp_path / f"recipe{expected}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        with FakeTGIServer(latency=0.0, capacity=8) as tgi:
            tgi.set_fault("empty", count=1)  # one unusable output: with one attempt, that seed fails
            rc = main(["run", str(path), "--steps", "synthesize", "--set", f"synthesis.endpoint={tgi.url}", *flag])
        report = json.loads((run / "recipe_result.json").read_text())["synthesis_report"]
        assert report["failed"] == 1 and report["synthesized"] == 7
        assert rc == expected
