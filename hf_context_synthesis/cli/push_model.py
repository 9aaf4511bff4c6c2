"""The ``push-model`` subcommand: publish a tuned model folder to the Hub with its card and eval results."""

from __future__ import annotations

import argparse
import sys
import tempfile

from ..evaluation.results import load_eval_results
from ..hub.publish import HubPublishError, prepare_model_folder, push_model_to_hub
from .push_dataset import add_common_arguments, card_kwargs, check_push_arguments, upload_listing



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``context-synthesis push-model DIR REPO_ID [...]``."""
    parser.add_argument("directory", help="Training output folder (model + tokenizer saved with save_pretrained).")
    parser.add_argument("repo_id", help="Model repo, e.g. my-org/llama-long-context.")
    parser.add_argument("--dataset-repo-id", default=None, help="Hub id of the synthesized training data.")
    parser.add_argument("--base-model", default=None, help="Hub id of the fine-tuned base model.")
    parser.add_argument("--eval-results", default=None,
                        help="results.json written by `context-synthesis evaluate` (added as model-index).")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    problems = check_push_arguments(args, "push-model", needs="config.json",
                                    what="a training output folder (save_pretrained)")
    eval_results = None
    if args.eval_results:
        with problems.check("--eval-results"):
            eval_results = load_eval_results(args.eval_results)
    problems.raise_if_any()
    if getattr(args, "dry_run", False):
        with tempfile.TemporaryDirectory(prefix="context-synthesis-dry-run-") as tmp:
            prepare_model_folder(
                args.directory, tmp, repo_id=args.repo_id, dataset_repo_id=args.dataset_repo_id,
                base_model=args.base_model, eval_results=eval_results, **card_kwargs(args),
            )
            print(upload_listing(tmp, args.repo_id, "model", args.private))
        return 0
    try:
        info = push_model_to_hub(
            args.directory, args.repo_id, token=args.token, private=args.private, revision=args.revision,
            dataset_repo_id=args.dataset_repo_id, base_model=args.base_model, eval_results=eval_results,
            commit_message=args.commit_message, **card_kwargs(args),
        )
    except HubPublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed model {args.repo_id}: {info.commit_url}")
    return 0
