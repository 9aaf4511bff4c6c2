"""Hub publishing end to end against the loopback Hub: the real HfApi pushes, load_dataset / from_pretrained
read back, one commit per push, retries, auth errors, secret scans, and the Trainer callback."""

from __future__ import annotations

import json
import logging
import math
import secrets
from pathlib import Path

import pytest
from conftest import write_seed_subset

from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint

TOKEN = "hf_" + secrets.token_hex(16)
READ_ONLY_TOKEN = "hf_" + secrets.token_hex(16)
PASSWORD = "pw" + secrets.token_hex(8)
URL_KEY = "key" + secrets.token_hex(8)
SECRET_ENDPOINT = f"http://ctxuser:{PASSWORD}@tgi.internal.example:8080/v1?key={URL_KEY}"
NAMESPACE = "ctx-user"
SECRETS = (TOKEN, READ_ONLY_TOKEN, PASSWORD, URL_KEY)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A token-protected loopback Hub; huggingface_hub, datasets and transformers point at it; temp caches."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHubServer(token=TOKEN, read_only_token=READ_ONLY_TOKEN, write_namespaces={NAMESPACE}) as server:
        with hub_endpoint(server.url):
            yield server


@pytest.fixture(scope="module")
def synthesized_dir(tmp_path_factory, seeds_dir) -> Path:
    """A folder written by synthesize_to_directory from 2 tasks x 5 real seeds through the fake TGI server."""
    from hf_context_synthesis import SynthesisConfig
    from hf_context_synthesis.synthesis.output import CONFIG_FILE, synthesize_to_directory
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    root = tmp_path_factory.mktemp("synth")
    seeds = write_seed_subset(seeds_dir, root / "seeds", ("hotpotqa", "qasper"), 5)
    out = root / "out"
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        config = SynthesisConfig(seed=str(seeds), endpoint=srv.url, num_distractors=3, progress=False,
                                 generation_cache_dir=str(root / "gen"))
        report = synthesize_to_directory(config, out, datasets_cache_dir=str(root / "ds-cache"))
    assert report.examples == 10
    # a settings file as an older/foreign writer might leave it: with the raw endpoint and a token
    settings = json.loads((out / CONFIG_FILE).read_text())
    settings.update(endpoint=SECRET_ENDPOINT, token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}"})
    (out / CONFIG_FILE).write_text(json.dumps(settings))
    return out


def _local_rows(directory: Path, tmp_path: Path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(directory / "data" / "*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "local-cache"))


def _assert_no_secrets(*texts: str | bytes) -> None:
    for text in texts:
        blob = text if isinstance(text, bytes) else text.encode()
        for secret in SECRETS:
            assert secret.encode() not in blob, f"secret {secret[:5]}... leaked"


# ------------------------------------------------------------------------------------------------ datasets
def test_push_dataset_dir_reads_back_with_load_dataset(hub, synthesized_dir, tmp_path, caplog):
    import datasets
    from huggingface_hub import DatasetCard

    from hf_context_synthesis.hub.publish import push_dataset_to_hub

    repo = f"{NAMESPACE}/ctx-data"
    caplog.set_level(logging.DEBUG)
    info = push_dataset_to_hub(synthesized_dir, repo, token=TOKEN, private=True)
    commits = hub.commits(repo, "dataset")
    assert len(commits) == 2 and commits[-1].oid == info.oid  # the repo's creation + exactly one push
    assert hub.repo(repo, "dataset").private is True
    files = hub.files(repo, "dataset")
    assert {"README.md", "length_histogram.png", "data/train-00000-of-00001.parquet"} <= set(files)
    assert files["length_histogram.png"].startswith(b"\x89PNG")

    back = datasets.load_dataset(repo, split="train", token=TOKEN, cache_dir=str(tmp_path / "hub-cache"))
    local = _local_rows(synthesized_dir, tmp_path)
    assert back.to_list() == local.to_list() and len(back) == 10

    card = DatasetCard(files["README.md"].decode())
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert {"synthetic", "long-context"} <= set(card.data.tags) and card.data.size_categories == ["n<1K"]
    text = card.text
    assert "](length_histogram.png)" in text and "2502.15592" in text and "Generalizing From Short to Long" in text
    assert "| hotpotqa | 5 |" in text and "| qasper | 5 |" in text
    p50 = sorted(local["num_tokens"])[4:6]
    assert f"| p50 | {sum(p50) / 2:,.1f}".rstrip("0").rstrip(".") in text
    assert "Question: {{ instruction }}" in text  # the synthesis prompt template
    assert "| requested | 10 |" in text and "| failed | 0 |" in text and "tgi" in text
    assert "fake-org/fake-tgi-model" in text  # the served model the rows record
    assert "tgi.internal.example" not in text  # the endpoint kind is shown, not the endpoint
    _assert_no_secrets(hub.all_recorded_bytes(), caplog.text)
    # the token travelled only in Authorization headers
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests_to("/api/datasets/"))


def test_repush_of_a_dataset_replaces_stale_shards_in_one_commit(hub, tmp_path):
    import datasets

    from hf_context_synthesis.hub.publish import push_dataset_to_hub

    repo = f"{NAMESPACE}/resharded"
    rows = [{"task": "t" + str(i % 3), "num_tokens": 100 + i, "text": "x" * 2000} for i in range(60)]
    big = datasets.Dataset.from_list(rows)
    push_dataset_to_hub(big, repo, token=TOKEN, max_shard_size="40KB")
    shards = sorted(p for p in hub.files(repo, "dataset") if p.startswith("data/"))
    expected = math.ceil(big._estimate_nbytes() / 40_000)
    assert expected > 1 and len(shards) == expected
    assert shards[-1] == f"data/train-{expected - 1:05d}-of-{expected:05d}.parquet"

    small = datasets.Dataset.from_list(rows[:10])
    push_dataset_to_hub(small, repo, token=TOKEN, max_shard_size="40KB")
    assert len(hub.commits(repo, "dataset")) == 3
    assert sorted(p for p in hub.files(repo, "dataset") if p.startswith("data/")) == ["data/train-00000-of-00001.parquet"]
    back = datasets.load_dataset(repo, split="train", token=TOKEN, cache_dir=str(tmp_path / "c"))
    assert back.to_list() == small.to_list()


def test_dataset_dict_splits_and_token_from_environment(hub, tmp_path, monkeypatch):
    import datasets

    from hf_context_synthesis.hub.publish import push_dataset_to_hub

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"task": ["a", "b"], "num_tokens": [5, 7]}),
        test=datasets.Dataset.from_dict({"task": ["a"], "num_tokens": [9]}),
    )
    push_dataset_to_hub(dd, f"{NAMESPACE}/splits", revision="v1")
    assert len(hub.commits(f"{NAMESPACE}/splits", "dataset", branch="v1")) == 2
    back = datasets.load_dataset(f"{NAMESPACE}/splits", revision="v1", cache_dir=str(tmp_path / "c"))
    assert {k: v.to_dict() for k, v in back.items()} == {k: v.to_dict() for k, v in dd.items()}


def test_builder_report_in_dataset_info_feeds_the_card(tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    from hf_context_synthesis import SynthesisConfig, SynthesisReport
    from hf_context_synthesis.hub.publish import prepare_dataset_folder

    report = SynthesisReport(seeds=3, requested=3, generated=2, cached=1, retried=4, synthesized=3, examples=3)
    settings = SynthesisConfig(seed="org/seeds", random_seed=777).to_dict()
    info = datasets.DatasetInfo(description=(
        "Long-context instruction data synthesized by context synthesis (arXiv 2502.15592).\n\n"
        f"Synthesis report:\n{report.to_json()}\n\nSettings:\n{json.dumps(settings, indent=2)}"
    ))
    ds = datasets.Dataset.from_dict({"task": ["a", "a", "b"], "num_tokens": [10, 20, 30]}, info=info)
    stats = prepare_dataset_folder(ds, tmp_path, repo_id="o/d")
    assert stats["examples_per_task"] == {"a": 2, "b": 1}
    card = DatasetCard((tmp_path / "README.md").read_text())
    assert "| retried | 4 |" in card.text and "| cached | 1 |" in card.text and "| random seed | 777 |" in card.text
    assert card.data.source_datasets == ["org/seeds"]
    assert (tmp_path / "length_histogram.png").is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_folder_shards_larger_than_the_bound_are_resharded(synthesized_dir, tmp_path):
    import pyarrow.parquet as pq

    from hf_context_synthesis.hub.publish import prepare_dataset_folder

    source = sorted((synthesized_dir / "data").glob("*.parquet"))
    bound = max(f.stat().st_size for f in source) // 3
    prepare_dataset_folder(synthesized_dir, tmp_path / "out", repo_id="o/d", max_shard_size=bound)
    shards = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    assert len(shards) > 1 and all(f.name.endswith(f"-of-{len(shards):05d}.parquet") for f in shards)
    rows = [r for f in shards for r in pq.read_table(f).to_pylist()]
    assert rows == [r for f in source for r in pq.read_table(f).to_pylist()]


def test_transient_commit_errors_are_retried_into_exactly_one_commit(hub, caplog):
    import datasets

    from hf_context_synthesis.hub.publish import push_dataset_to_hub

    repo = f"{NAMESPACE}/flaky"
    hub.fail_next_commits(2, status=500)
    caplog.set_level(logging.DEBUG)
    push_dataset_to_hub(datasets.Dataset.from_dict({"num_tokens": [1, 2, 3]}), repo, token=TOKEN, backoff_base=0.01)
    assert len(hub.requests_to(f"/api/datasets/{repo}/commit/", "POST")) == 3
    assert len(hub.commits(repo, "dataset")) == 2  # creation + one push
    assert caplog.text.count("retrying") == 2
    _assert_no_secrets(caplog.text)


def test_persistent_server_errors_give_a_clear_error(hub):
    import datasets

    from hf_context_synthesis.hub.publish import HubPublishError, push_dataset_to_hub

    hub.fail_next_commits(3, status=503)
    with pytest.raises(HubPublishError, match=r"after 3 attempts: HTTP 503") as info:
        push_dataset_to_hub(datasets.Dataset.from_dict({"a": [1]}), f"{NAMESPACE}/down", token=TOKEN,
                            max_attempts=3, backoff_base=0.01)
    assert f"{NAMESPACE}/down" in str(info.value) and info.value.__cause__ is None
    assert len(hub.commits(f"{NAMESPACE}/down", "dataset")) == 1  # only the creation commit


@pytest.mark.parametrize(
    ("token", "repo", "status"),
    [
        ("hf_" + "0" * 32, f"{NAMESPACE}/denied", 401),  # unknown token
        (READ_ONLY_TOKEN, f"{NAMESPACE}/denied", 403),  # valid token without write access
        (TOKEN, "someone-else/denied", 403),  # namespace the token may not write to
    ],
)
def test_auth_errors_name_the_repo_and_hide_the_token(hub, token, repo, status, caplog):
    import datasets

    from hf_context_synthesis.hub.publish import HubPublishError, push_dataset_to_hub

    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubPublishError) as info:
        push_dataset_to_hub(datasets.Dataset.from_dict({"a": [1]}), repo, token=token, backoff_base=0.01)
    err = info.value
    assert f"not allowed to write to dataset repo {repo}" in str(err) and "write access" in str(err)
    assert err.status == status and err.__cause__ is None and err.__suppress_context__
    assert token not in str(err) and token not in repr(err) and token not in caplog.text
    assert not hub.requests_to("/commit/")  # nothing was committed


def test_secrets_in_settings_and_text_never_reach_the_hub(hub, synthesized_dir, caplog):
    from hf_context_synthesis import SynthesisConfig
    from hf_context_synthesis.hub.publish import push_dataset_to_hub

    caplog.set_level(logging.DEBUG)
    config = SynthesisConfig(seed="THUDM/LongBench", seed_revision="abc123", endpoint=[SECRET_ENDPOINT], endpoint_token=TOKEN,
                             headers={"X-Api-Key": URL_KEY})
    push_dataset_to_hub(synthesized_dir, f"{NAMESPACE}/scan", token=TOKEN, config=config,
                        description=f"Generated against {SECRET_ENDPOINT} with token {TOKEN}.")
    card = hub.files(f"{NAMESPACE}/scan", "dataset")["README.md"].decode()
    assert "THUDM/LongBench@abc123" in card and "http://tgi.internal.example:8080/v1" in card
    uploaded = b"".join(data for _, _, data in hub.uploaded)
    _assert_no_secrets(uploaded, caplog.text)
    bodies = b"".join(r.body for r in hub.requests)
    _assert_no_secrets(bodies)


# ------------------------------------------------------------------------------------------------ models
def _training_folder(tiny_model_dir: str, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(tiny_model_dir, out)
    (out / "context_synthesis_training.json").write_text(json.dumps({
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dataset": f"{NAMESPACE}/ctx-data",
        "packing": {"packing": True, "packing_strategy": "bfd", "max_length": 4096},
        "packing_stats": {"packing_efficiency": 0.97, "sequences": 12},
        "hyperparameters": {"learning_rate": 2e-5, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03,
                            "num_train_epochs": 1, "per_device_train_batch_size": 1,
                            "gradient_accumulation_steps": 8, "max_length": 4096, "seed": 42},
    }))
    (out / "trainer_state.json").write_text(json.dumps({
        "global_step": 3, "log_history": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 3, "loss": 2.0}],
    }))
    (out / "optimizer.pt").write_bytes(b"not for the hub")
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "config.json").write_text("{}")
    return out


def test_push_model_reads_back_with_from_pretrained(hub, tiny_model_dir, tmp_path, caplog):
    import torch
    from huggingface_hub import EvalResult, ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_context_synthesis.hub.publish import push_model_to_hub

    caplog.set_level(logging.DEBUG)
    run = _training_folder(tiny_model_dir, tmp_path)
    results = [
        EvalResult(task_type="text-generation", dataset_type="THUDM/LongBench", dataset_name="LongBench (hotpotqa)",
                   dataset_config="hotpotqa", dataset_split="test", metric_type="f1", metric_name="F1",
                   metric_value=12.5),
    ]
    repo = f"{NAMESPACE}/tiny-long"
    push_model_to_hub(run, repo, token=TOKEN, eval_results=results, license="apache-2.0")
    assert len(hub.commits(repo)) == 2
    files = hub.files(repo)
    assert "model.safetensors" in files and "tokenizer.json" in files and "training_loss.png" in files
    assert files["training_loss.png"].startswith(b"\x89PNG")
    assert "optimizer.pt" not in files and not any(f.startswith("checkpoint-") for f in files)

    cache = str(tmp_path / "tf-cache")
    model = AutoModelForCausalLM.from_pretrained(repo, token=TOKEN, cache_dir=cache)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for (name, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(ref.state_dict().items())):
        assert torch.equal(a, b), name
    tok = AutoTokenizer.from_pretrained(repo, token=TOKEN, cache_dir=cache)
    ref_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Context: the mill was built in 1820. Question: when?"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"] and tok.chat_template == ref_tok.chat_template

    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == [f"{NAMESPACE}/ctx-data"]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    _, back = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert back == results
    assert "](training_loss.png)" in card.text and "| learning_rate | 2e-05 |" in card.text
    assert "| packing_strategy | `bfd` |" in card.text and "| packing_efficiency | 0.97 |" in card.text
    assert "Last logged training loss: 2." in card.text
    _assert_no_secrets(b"".join(d for _, _, d in hub.uploaded), caplog.text)


def test_cli_push_model_and_dataset(hub, tiny_model_dir, synthesized_dir, tmp_path, monkeypatch, capsys):
    from hf_context_synthesis.cli import main

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    results = tmp_path / "eval"
    results.mkdir()
    (results / "results.json").write_text(json.dumps({"model": "x", "tasks": {"hotpotqa": {
        "task": "hotpotqa", "metric": "F1", "score": 33.3, "num_examples": 5}}}))
    assert main(["push-model", str(_training_folder(tiny_model_dir, tmp_path)), f"{NAMESPACE}/cli-model",
                 "--eval-results", str(results), "--private"]) == 0
    assert main(["push-dataset", str(synthesized_dir), f"{NAMESPACE}/cli-data", "--tags", "demo"]) == 0
    assert main(["push-dataset", str(synthesized_dir), "other-org/cli-data"]) == 2
    err = capsys.readouterr().err
    assert "not allowed to write to dataset repo other-org/cli-data" in err and TOKEN not in err
    assert "model-index" in hub.files(f"{NAMESPACE}/cli-model")["README.md"].decode()
    assert "- demo" in hub.files(f"{NAMESPACE}/cli-data", "dataset")["README.md"].decode()


# ------------------------------------------------------------------------------------------------ callback
def _train_with_callback(tiny_model_dir: str, tmp_path: Path, callback, **args_kwargs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok("Context: the report describes the village and the mill. Answer: the miller.")["input_ids"]
    rows = [{"input_ids": ids, "labels": ids} for _ in range(4)]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    settings = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, logging_steps=1,
                    learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    args = TrainingArguments(**{**settings, **args_kwargs})
    trainer = Trainer(model=model, args=args, train_dataset=Rows(), processing_class=tok, callbacks=[callback])
    trainer.train()
    return trainer


def test_callback_pushes_at_train_end(hub, tiny_model_dir, tmp_path):
    from hf_context_synthesis.trainer_callbacks import HubPushCallback

    repo = f"{NAMESPACE}/cb-sync"
    cb = HubPushCallback(repo, token=TOKEN, dataset_repo_id=f"{NAMESPACE}/ctx-data", base_model="org/base")
    trainer = _train_with_callback(tiny_model_dir, tmp_path, cb)
    assert len(cb.commits) == 1 and len(hub.commits(repo)) == 2
    files = hub.files(repo)
    assert {"model.safetensors", "tokenizer.json", "trainer_state.json", "training_loss.png"} <= set(files)
    card = files["README.md"].decode()
    assert "| max_steps | 2 |" in card and "| learning_rate | 0.001 |" in card and "org/base" in card
    assert json.loads(files["trainer_state.json"])["global_step"] == 2
    from safetensors.torch import load

    pushed = load(files["model.safetensors"])
    weights = trainer.model.state_dict()
    assert all(pushed[k].equal(weights[k]) for k in pushed)


def test_callback_background_pushes_every_save_and_waits_at_end(hub, tiny_model_dir, tmp_path):
    from hf_context_synthesis.trainer_callbacks import HubPushCallback

    repo = f"{NAMESPACE}/cb-background"
    cb = HubPushCallback(repo, token=TOKEN, push_on_save=True, background=True)
    hub.fail_next_commits(1)  # the first background commit needs a retry
    cb.backoff_base = 0.01
    _train_with_callback(tiny_model_dir, tmp_path, cb, save_strategy="steps", save_steps=1)
    assert not cb._pending and len(cb.commits) == 3
    messages = [c.message for c in hub.commits(repo)[1:]]
    assert messages == ["Training in progress, step 1", "Training in progress, step 2", "End of training (step 2)"]


@pytest.mark.parametrize("background", [False, True])
def test_a_failed_push_never_loses_the_model(hub, tiny_model_dir, tmp_path, caplog, background):
    """The push fails (no write access / the Hub keeps answering 500): train() returns, the trained model
    is saved locally first, and the failure is one ERROR line naming the folder and the command to retry."""
    from safetensors.torch import load_file

    from hf_context_synthesis.trainer_callbacks import HubPushCallback

    cb = HubPushCallback("not-mine/cb", token=TOKEN, background=background, max_attempts=1, backoff_base=0.01)
    trainer = _train_with_callback(tiny_model_dir, tmp_path, cb)  # does not raise
    out = tmp_path / "out"
    saved = load_file(str(out / "model.safetensors"))
    weights = trainer.model.state_dict()
    assert saved and all(saved[k].equal(weights[k]) for k in saved)  # the trained weights, not the initial ones
    assert (out / "tokenizer.json").is_file() and (out / "trainer_state.json").is_file()
    assert cb.push_error and "\n" not in cb.push_error
    assert "not allowed to write to model repo not-mine/cb" in cb.push_error
    assert f"context-synthesis push-model {out} not-mine/cb" in cb.push_error and TOKEN not in cb.push_error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.endswith("push")]
    assert [r.getMessage() for r in errors][-1] == cb.push_error
