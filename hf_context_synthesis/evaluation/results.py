"""Evaluation results as files: read the ``results.json`` an evaluation wrote (for cards and the model-index)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..utils.folders import read_json


def load_eval_results(path: str | os.PathLike[str]) -> list[Any]:
    """``EvalResult`` list from an evaluation ``results.json`` (``EvalReport.save``) or its folder."""
    from .longbench_v1 import EvalReport, TaskScore

    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    data = read_json(p)
    if data and data.get("suite") == "longbench-v2":
        from .longbench_v2 import eval_results_from_dict

        return eval_results_from_dict(data)
    if not data or "tasks" not in data:
        raise ValueError(f"{p} is not an evaluation results.json (no 'tasks')")
    report = EvalReport(
        model_id=str(data.get("model", "")),
        tasks={t: TaskScore(**s) for t, s in data["tasks"].items()},
        settings=data.get("settings") or {},
    )
    return report.eval_results()
