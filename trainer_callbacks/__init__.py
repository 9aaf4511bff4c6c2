"""``transformers`` TrainerCallbacks for long-context training (importable as ``hf_context_synthesis.trainer_callbacks``).

* :class:`ThroughputCallback`: real-token throughput and padding efficiency per step and per epoch, of the
  batches actually trained, summed over the ranks (global and per-rank figures, labelled).
* :class:`LongContextProbeCallback`: answer accuracy by the relevant document's position, every N steps.
* :class:`HubPushCallback`: pushes the model, tokenizer and model card to the Hub at save / train end.

They plug into ``transformers.Trainer`` and TRL's ``SFTTrainer`` via ``callbacks=[...]``. Submodules are
imported lazily so that importing this package does not import ``transformers``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ThroughputCallback": "throughput",
    "LongContextProbeCallback": "probe",
    "HubPushCallback": "push",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .probe import LongContextProbeCallback
    from .push import HubPushCallback
    from .throughput import ThroughputCallback


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
