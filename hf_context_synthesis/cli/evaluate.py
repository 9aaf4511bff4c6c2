"""The ``evaluate`` subcommand: LongBench v1 (document-level tasks) or v2 on a model or endpoint."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from ..evaluation.longbench_tasks import LONGBENCH_TASKS



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``context-synthesis evaluate``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Local model folder or Hub id, generated in process with transformers.")
    source.add_argument("--endpoint", help="TGI / OpenAI-compatible endpoint URL to generate with.")
    parser.add_argument("--suite", choices=("longbench", "longbench-v2"), default="longbench",
                        help="LongBench (v1, the 8 document-level tasks; default) or LongBench v2 (503 MC questions).")
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="LongBench's test data: a folder of <task>.jsonl files, data.zip, or a Hub dataset id "
                             "(parquet mirror). LongBench v2: data.json, a jsonl/parquet file, a folder or Hub id.")
    parser.add_argument("--output", "--output-dir", dest="output_dir", required=True, metavar="DIR",
                        help="Where LongBench's pred files + result.json and results.json, results.md go.")
    parser.add_argument(
        "--tasks", nargs="+", default=None, help=f"Tasks to run (default: all with a file): {' '.join(LONGBENCH_TASKS)}."
    )
    parser.add_argument("--tokenizer", default=None, help="Tokenizer for truncation (default: the model's).")
    parser.add_argument("--max-length", type=int, default=None,
                        help="LongBench's prompt budget in tokens, BOS included: 3500 (4k), 7500 (8k), 15500 (16k), "
                             "31500 (32k), 127500 (128k); LongBench v2 uses 120000. Default: from the model's "
                             "context window by the same rule. 0 = no truncation (not LongBench's protocol).")
    parser.add_argument("--limit", type=int, default=None, help="At most N examples per task.")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="Local: prompts generated together (default 1 as LongBench; >1 left-pads, which can "
                             "change greedy outputs). Endpoint: requests in flight.")
    parser.add_argument("--summarization-metric", choices=("rouge", "rouge-score"), default="rouge",
                        help="ROUGE-L of govreport/qmsum/multinews: 'rouge' = LongBench's (default), "
                             "'rouge-score' = Google's (not comparable with LongBench).")
    parser.add_argument("--cot", action="store_true",
                        help="LongBench v2 only: chain-of-thought prompts (pred.py --cot).")
    parser.add_argument("--temperature", type=float, default=None,
                        help="LongBench v2 only: sampling temperature (default: pred.py's 0.1; 0 = greedy). "
                             "LongBench v1 is always greedy.")
    parser.add_argument("--device", default=None, help="Device for a local model (default: cuda if available).")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")


def evaluate_from_args(args: argparse.Namespace) -> int:
    """Run ``context-synthesis evaluate``; prints the table, returns 1 if any generation failed."""
    from ..evaluation.longbench_v1 import evaluate_longbench

    common = dict(
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        output_dir=args.output_dir,
    )
    if getattr(args, "suite", "longbench") == "longbench-v2":
        from ..evaluation.longbench_v2 import evaluate_longbench_v2

        v2_options: dict[str, Any] = {"cot": bool(getattr(args, "cot", False))}
        if getattr(args, "temperature", None) is not None:
            v2_options["temperature"] = args.temperature
        report: Any = evaluate_longbench_v2(args.endpoint or args.model, args.data_dir, **common, **v2_options)
        print(report.to_markdown())
        print(f"Results written to {args.output_dir}")
        return 1 if report.num_failed else 0
    if getattr(args, "cot", False) or getattr(args, "temperature", None) is not None:
        raise ValueError("--cot and --temperature apply to --suite longbench-v2 only (LongBench v1 is greedy)")
    report = evaluate_longbench(
        args.endpoint or args.model,
        args.data_dir,
        tasks=args.tasks,
        summarization_metric=args.summarization_metric,
        **common,
    )
    print(report.to_markdown())
    print(f"Results written to {args.output_dir}")
    return 1 if any(s.num_failed for s in report.tasks.values()) else 0


def preflight(args: argparse.Namespace) -> None:
    """``evaluate`` checks the model, tokenizer and data folder before loading anything (all problems at once)."""
    from ..synthesis.plan import RunSetupError, SetupProblems, check_model

    from ..utils.checks import check_output_writable

    problems = SetupProblems("evaluate")
    if getattr(args, "suite", "longbench") == "longbench" and (
            getattr(args, "cot", False) or getattr(args, "temperature", None) is not None):
        problems.add("--cot" if getattr(args, "cot", False) else "--temperature",
                     "--cot and --temperature apply to --suite longbench-v2 only (LongBench v1 is greedy)", bad_value=True)
    for name in ("limit", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            problems.add(f"--{name.replace('_', '-')}", f"--{name.replace('_', '-')} must be >= 1, got {value}",
                         bad_value=True)
    if getattr(args, "output_dir", None):
        with problems.check("--output"):
            check_output_writable(args.output_dir, "evaluate")
    data_dir = getattr(args, "data_dir", None)
    hub_id = isinstance(data_dir, str) and re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", data_dir)
    if isinstance(data_dir, str) and not os.path.exists(data_dir) and not hub_id:
        problems.add("--data-dir", (
            f"evaluate: --data-dir {data_dir!r} is not a folder of LongBench <task>.jsonl files, a data.zip "
            "or a Hub dataset id (see docs/synthesis.md: Seeds and LongBench data)"
        ))
    elif isinstance(data_dir, str) and getattr(args, "suite", "longbench") == "longbench":
        from ..evaluation.longbench_tasks import probe_data

        with problems.check("--data-dir"):
            try:  # the folder / archive / Hub dataset holds the requested tasks
                probe_data(data_dir, getattr(args, "tasks", None))
            except OSError as err:
                raise RunSetupError(f"evaluate: {err}") from None
    model = getattr(args, "model", None)
    if isinstance(model, str) and model:
        with problems.check("--model"):
            check_model(model, what="model", step="evaluate", setting_hint="--model NAME_OR_PATH")
    tokenizer = getattr(args, "tokenizer", None)
    if isinstance(tokenizer, str) and tokenizer:
        with problems.check("--tokenizer"):
            check_model(tokenizer, what="tokenizer", step="evaluate", setting_hint="--tokenizer NAME_OR_PATH",
                        kind="tokenizer")
    problems.raise_if_any()


def run(args: argparse.Namespace) -> int:
    """``context-synthesis evaluate``: the preflight, then the evaluation; a model folder trained by
    ``context-synthesis train`` gets its card written again with these results."""
    preflight(args)
    code = evaluate_from_args(args)
    if args.model and os.path.isdir(args.model):
        from ..evaluation.results import load_eval_results
        from ..hub.artifacts import refresh_model_card

        refresh_model_card(args.model, eval_results=load_eval_results(args.output_dir))
    return code
