"""tqdm progress bars that follow ``datasets``' progress-bar switches."""

from __future__ import annotations

from typing import Any


def progress_bar(*, total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any):
    """A ``datasets``-style tqdm bar; silent when ``enabled`` is false or bars are disabled globally
    (``datasets.disable_progress_bars()``)."""
    from datasets.utils import tqdm as hf_tqdm
    from datasets.utils.logging import is_progress_bar_enabled

    return hf_tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and is_progress_bar_enabled()), **kwargs)
