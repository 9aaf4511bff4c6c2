"""tqdm progress bars that follow ``datasets``' progress-bar switches."""

from __future__ import annotations

from typing import Any


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
