"""tqdm progress bars that follow ``datasets``' progress-bar switches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: Set by :func:`quiet_console`: progress bars and the Trainer's printed step dicts are off.
_console_quiet = False


def progress_bar(*, total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any):
    """A ``datasets``-style tqdm bar; silent when ``enabled`` is false or bars are disabled globally
    (``datasets.disable_progress_bars()``)."""
    from datasets.utils import tqdm as hf_tqdm
    from datasets.utils.logging import is_progress_bar_enabled

    return hf_tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and is_progress_bar_enabled()), **kwargs)


class RequestProgress:
    """A progress bar over seeds whose rate and ETA count finished requests only.

    ``update(n)`` advances for work done by a request; inside ``with bar.from_cache():`` updates count
    cache hits, which advance the bar without entering its rate (a resumed run's ETA is not fooled by
    thousands of instant hits). ``request_done(tokens_out)`` adds the output tokens/s to the bar.
    """

    def __init__(self, *, total: int | None, desc: str, unit: str = "seed", enabled: bool = True) -> None:
        import time

        self.bar = progress_bar(total=total, desc=desc, unit=unit, enabled=enabled)
        self._cached_mode = False
        self._start = time.perf_counter()
        self.tokens_out = 0
        self.cached = 0
        self._requests = 0

    def update(self, n: int = 1) -> None:
        if not self._cached_mode:
            self.bar.update(n)
            return
        self.cached += n
        if getattr(self.bar, "disable", False):
            return
        # advance without a rate sample: tqdm's rate is (n - initial) / elapsed, its EMA uses n - last_print_n
        self.bar.n += n
        self.bar.initial += n
        self.bar.last_print_n += n
        self._postfix()

    def from_cache(self):
        """Context manager: updates inside it are cache hits."""
        import contextlib

        @contextlib.contextmanager
        def mode():
            self._cached_mode = True
            try:
                yield self
            finally:
                self._cached_mode = False

        return mode()

    def request_done(self, tokens_out: int = 0) -> None:
        """One request finished: refresh the tokens/s shown next to the bar."""

        self.tokens_out += int(tokens_out or 0)
        self._requests += 1
        self._postfix()

    def _postfix(self) -> None:
        import time

        if getattr(self.bar, "disable", False):
            return
        parts = []
        if self._requests:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            parts.append(f"{self.tokens_out / elapsed:,.0f} tok/s out")
        if self.cached:
            parts.append(f"{self.cached} cached")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)

    def close(self) -> None:
        self.bar.close()


def console_is_quiet() -> bool:
    """Whether :func:`quiet_console` is in force (the command line's ``-q``)."""
    return _console_quiet


def quiet_console() -> Callable[[], None]:
    """Silence the console output that is not logging: every progress bar (this package's, which follow
    ``datasets``' switch, ``datasets``' own, ``huggingface_hub``'s downloads, transformers' loading bars)
    and, through :func:`quiet_trainer_output`, the Trainer's step dicts (``{'loss': ..., 'grad_norm': ...}``).

    Returns a function that restores the switches as they were (a process running several commands,
    e.g. tests, gets its bars back).
    """
    global _console_quiet
    import datasets
    import huggingface_hub.utils as hub_utils
    from datasets.utils.logging import is_progress_bar_enabled

    restore: list[Callable[[], None]] = []
    previous_quiet = _console_quiet
    restore.append(lambda: globals().__setitem__("_console_quiet", previous_quiet))
    if is_progress_bar_enabled():
        datasets.disable_progress_bars()
        restore.append(datasets.enable_progress_bars)
    if not hub_utils.are_progress_bars_disabled():
        hub_utils.disable_progress_bars()
        restore.append(hub_utils.enable_progress_bars)
    try:
        import transformers.utils.logging as tf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        tf_logging = None
    if tf_logging is not None and tf_logging.is_progress_bar_enabled():
        tf_logging.disable_progress_bar()
        restore.append(tf_logging.enable_progress_bar)
    _console_quiet = True

    def undo() -> None:
        for step in reversed(restore):
            step()

    return undo


def quiet_trainer_output(trainer: Any) -> None:
    """Under :func:`quiet_console`, take transformers' ``ProgressCallback`` (bar + printed step dicts) and
    ``PrinterCallback`` (printed step dicts) off ``trainer``; its step dicts go to this package's log at
    INFO instead (the run's log file keeps them; ``trainer_state.json`` has them all). A no-op otherwise."""
    if not _console_quiet:
        return
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class LogStepsCallback(TrainerCallback):
        """Logs each step dict of the Trainer at INFO (instead of printing it)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs and state.is_local_process_zero:
                shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items() if k != "total_flos"}
                logger.info("step %d: %s", state.global_step, shown)

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogStepsCallback())
