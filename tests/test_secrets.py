"""Tokens in play never leak: the Hub token stays off non-Hub endpoints, and every token is redacted.

The server here echoes the ``Authorization`` header it received in its 401 error messages, as some
careless servers do; nothing a run writes or logs may then contain a token.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import datasets
import pytest

import hf_context_synthesis  # noqa: F401 - registers the builder
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.utils.secrecy import endpoint_token, redact
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

HUB_TOKEN = "hf_HubTokenOfTheUser0123456789"
ENDPOINT_TOKEN = "ep-secret-token-9876543210"


@pytest.fixture
def hub_token(monkeypatch, tmp_path):
    """The user's Hub token in HF_TOKEN, and an empty login cache of the test's own."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    return HUB_TOKEN


def _everything_written(caches: dict[str, str]) -> str:
    """Every text file the run left in the datasets cache (reports, dataset_info.json, ...)."""
    out = []
    for path in glob.glob(os.path.join(caches["cache_dir"], "**", "*.json"), recursive=True):
        with open(path, encoding="utf-8") as fh:
            out.append(fh.read())
    return "\n".join(out)


def test_load_dataset_token_is_the_hub_token_and_never_reaches_the_endpoint(small_seed_dir, caches, hub_token, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeTGIServer(latency=0.0, capacity=8, echo_authorization=True, faults={"http_401": 4}) as srv:
        ds = datasets.load_dataset(
            "context_synthesis", seed=str(small_seed_dir), split="train", endpoint=srv.url, token=hub_token,
            max_generation_attempts=1, **caches,
        )
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    reasons = json.dumps(report["failed_seeds"])
    assert report["failed"] == 4 and "Authorization: None" in reasons  # no Authorization header was sent
    assert "not sent to the endpoint" in caplog.text  # the user learns what token= means here
    for text in (ds.info.description, caplog.text, _everything_written(caches)):
        assert HUB_TOKEN not in text


def test_every_token_is_redacted_from_report_info_errors_and_logs(small_seed_dir, caches, hub_token, caplog):
    """The server echoes the token it got; report JSON, dataset_info.json, description and logs show ***."""
    caplog.set_level(logging.DEBUG)
    for token, echoed in ((ENDPOINT_TOKEN, ENDPOINT_TOKEN), (True, HUB_TOKEN)):
        with FakeTGIServer(latency=0.0, capacity=8, echo_authorization=True, faults={"http_401": 4}) as srv:
            ds = datasets.load_dataset(
                "context_synthesis", seed=str(small_seed_dir), split="train", endpoint=srv.url,
                endpoint_token=token, max_generation_attempts=1, **caches,
            )
        report_part = ds.info.description.split("Synthesis report:\n", 1)[1]
        assert "Authorization: Bearer ***" in report_part  # the echoed header, redacted
        written = _everything_written(caches)
        assert "Bearer ***" in written
        for text in (ds.info.description, caplog.text, written):
            assert echoed not in text and HUB_TOKEN not in text and ENDPOINT_TOKEN not in text
        caplog.clear()


def test_a_failed_run_names_no_token_in_its_error(small_seed_dir, caches, hub_token, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeTGIServer(required_authorization="Bearer the-right-one-000", echo_authorization=True) as srv:
        with pytest.raises(Exception) as err:
            datasets.load_dataset(
                "context_synthesis", seed=str(small_seed_dir), split="train", endpoint=srv.url,
                endpoint_token=ENDPOINT_TOKEN, max_generation_attempts=1, **caches,
            )
    assert "Bearer ***" in str(err.value) or "Bearer ***" in caplog.text
    for text in (str(err.value), caplog.text, _everything_written(caches)):
        assert ENDPOINT_TOKEN not in text and HUB_TOKEN not in text


def test_cli_error_line_redacts_the_echoed_token(small_seed_dir, tmp_path, hub_token, capsys, monkeypatch):
    from hf_context_synthesis.cli import main

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    with FakeTGIServer(required_authorization="Bearer the-right-one-000", echo_authorization=True) as srv:
        code = main(["synthesize", "--seed", str(small_seed_dir), "--endpoint", srv.url, "--endpoint-token",
                     ENDPOINT_TOKEN, "--output", str(tmp_path / "out"), "--max-generation-attempts", "1",
                     "--generation-cache-dir", str(tmp_path / "gen")])
    captured = capsys.readouterr()
    assert code != 0
    assert ENDPOINT_TOKEN not in captured.err + captured.out and HUB_TOKEN not in captured.err + captured.out


def test_token_keyword_is_refused_with_the_right_name():
    with pytest.raises(TypeError, match="endpoint_token"):
        SynthesisConfig(seed="x", endpoint="http://127.0.0.1:1", token="abc")
    # the command line's --endpoint-token true / false
    assert SynthesisConfig(seed="x", endpoint_token="true").endpoint_token is True
    assert SynthesisConfig(seed="x", endpoint_token="False").endpoint_token is False


def test_hub_token_goes_only_to_hugging_face_hosts_unless_asked(hub_token, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert endpoint_token(None, "http://127.0.0.1:8080") is False
    assert endpoint_token(None, "https://my-tgi.internal.example") is False
    assert endpoint_token(None, "https://xyz.us-east-1.aws.endpoints.huggingface.cloud") == HUB_TOKEN
    assert endpoint_token(True, "http://127.0.0.1:8080") == HUB_TOKEN
    assert endpoint_token(False, "https://xyz.endpoints.huggingface.cloud") is False
    assert endpoint_token(ENDPOINT_TOKEN, "http://127.0.0.1:8080") == ENDPOINT_TOKEN
    # redaction covers the Hub token and every endpoint token seen
    assert redact(f"a {HUB_TOKEN} b {ENDPOINT_TOKEN}") == "a *** b ***"


def test_library_log_records_are_redacted_whatever_the_handler(hub_token):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    log = logging.getLogger("hf_context_synthesis.some.module")
    handler = Keep()
    log.addHandler(handler)
    try:
        log.warning("server said %s", f"Authorization: Bearer {HUB_TOKEN}")
        try:
            raise RuntimeError(f"boom {HUB_TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    assert records and all(HUB_TOKEN not in r for r in records)
    assert "Bearer ***" in records[0] and "boom ***" in records[1]


def test_the_login_cache_token_is_redacted_too(monkeypatch, tmp_path):
    from huggingface_hub import constants

    login = "hf_FromTheLoginCache0123456789"
    path = tmp_path / "hf-home" / "token"
    path.parent.mkdir()
    path.write_text(login)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(path))
    assert redact(f"401: Authorization: Bearer {login}") == "401: Authorization: Bearer ***"
    assert endpoint_token(True, "http://127.0.0.1:8080") == login  # asked for: the login cache's token
    assert endpoint_token(None, "http://127.0.0.1:8080") is False
