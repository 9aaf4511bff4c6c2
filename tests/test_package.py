"""Package-level behaviour: light import, public API, namespaced subpackages, config validation, URLs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hf_context_synthesis
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.utils.urls import sanitize_url


def test_import_is_light_and_registers_the_builder():
    code = (
        "import sys, hf_context_synthesis, datasets.load as L;"
        "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules];"
        "assert not heavy, heavy;"
        "assert getattr(L.dataset_module_factory, '_context_synthesis_wrapped', False)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_resolves():
    for name in hf_context_synthesis.__all__:
        assert getattr(hf_context_synthesis, name) is not None, name
    with pytest.raises(AttributeError):
        hf_context_synthesis.not_a_thing  # noqa: B018


def test_subpackages_live_in_the_package_namespace():
    import hf_context_synthesis.dataset_scripts.context_synthesis as builder_module
    import hf_context_synthesis.trainer_callbacks as callbacks

    assert builder_module.ContextSynthesis.__module__ == "hf_context_synthesis.dataset_scripts.context_synthesis"
    assert callbacks.__name__ == "hf_context_synthesis.trainer_callbacks"
    import importlib.util

    assert importlib.util.find_spec("dataset_scripts") is None or "site-packages" not in str(
        importlib.util.find_spec("dataset_scripts").origin
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": 3}, "random_seed"),
        ({"seed": "x", "on_bad_row": "ignore"}, "on_bad_row"),
        ({"seed": "x", "relevant_position": "left"}, "relevant_position"),
        ({"seed": "x", "num_distractors": -1}, "num_distractors"),
        ({"seed": "x", "target_tokens": 0}, "target_tokens"),
        ({"seed": "x", "task_templates": {"t": "no context here {input}"}}, "{context}"),
        ({"seed": "x", "task_templates": {"t": "{context} {other}"}}, "str.format"),
        ({"seed": "x", "num_shards": 2, "shard_index": 2}, "shard_index"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message.replace("{", r"\{").replace("}", r"\}")):
        SynthesisConfig(**kwargs)


def test_config_public_dict_has_no_secrets():
    config = SynthesisConfig(seed="s", endpoint="https://user:pw@tgi.example/v1?key=abc", endpoint_token="hf_secret")
    text = repr(config) + str(config.to_dict())
    assert "hf_secret" not in text and "pw@" not in text and "key=abc" not in text
    assert config.to_dict()["generator"] == "https://tgi.example/v1"
    assert config.to_dict()["endpoint_kind"] == "tgi"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://user:pw@tgi.example:8080/v1?key=abc#frag", "https://tgi.example:8080/v1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/generate", "http://[::1]:8080/generate"),
        ("http://h:99999/", "<invalid url>"),
    ],
)
def test_sanitize_url(url, expected):
    assert sanitize_url(url) == expected


def test_no_print_in_library_code():
    """Library code logs; only the command line (``hf_context_synthesis/cli/``) writes to stdout."""
    import ast
    import pathlib

    root = pathlib.Path(hf_context_synthesis.__file__).parent
    offenders = []
    assert (root / "cli" / "main.py").is_file()
    for path in [*root.rglob("*.py")]:
        if path.relative_to(root).parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text())
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_settings_doc_documents_every_config_field():
    """docs/settings.md's tables are generated from the config dataclasses and must be current; the
    README links to it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "readme_fields.py"), "--check"], cwd=root)
    assert proc.returncode == 0, "docs/settings.md is stale: run python scripts/readme_fields.py"
    from hf_context_synthesis.synthesis.config import SynthesisConfig

    settings = (root / "docs" / "settings.md").read_text()
    import dataclasses

    assert all(f"| `{f.name}` |" in settings for f in dataclasses.fields(SynthesisConfig))
    assert "docs/settings.md" in (root / "README.md").read_text()
