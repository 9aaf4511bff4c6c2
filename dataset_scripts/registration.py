"""Make ``datasets.load_dataset("context_synthesis", ...)`` resolve to our builder.

datasets 5 has no loading scripts and no plugin entry points, so we wrap
``datasets.load.dataset_module_factory`` (the function ``load_dataset_builder`` asks for a module)
and answer the name ``context_synthesis`` with our builder module. Every other name goes to the
original factory untouched. Registering in ``_PACKAGED_DATASETS_MODULES`` is deliberately avoided:
packaged modules get data files from the working directory attached.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

DATASET_NAME = "context_synthesis"
BUILDER_MODULE = "hf_context_synthesis.dataset_scripts.context_synthesis"


def _module_hash() -> str:
    from .._version import __version__

    return hashlib.sha256(f"{BUILDER_MODULE}:{__version__}".encode()).hexdigest()[:16]


def register() -> None:
    """Install the ``context_synthesis`` name into ``datasets`` (idempotent)."""
    import datasets.inspect
    import datasets.load

    original = datasets.load.dataset_module_factory
    if getattr(original, "_context_synthesis_wrapped", False):
        return

    @functools.wraps(original)
    def dataset_module_factory(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == DATASET_NAME:
            return datasets.load.DatasetModule(
                module_path=BUILDER_MODULE,
                hash=_module_hash(),
                builder_kwargs={"dataset_name": DATASET_NAME},
            )
        return original(path, *args, **kwargs)

    dataset_module_factory._context_synthesis_wrapped = True  # type: ignore[attr-defined]
    datasets.load.dataset_module_factory = dataset_module_factory
    if getattr(datasets.inspect, "dataset_module_factory", None) is original:
        datasets.inspect.dataset_module_factory = dataset_module_factory
