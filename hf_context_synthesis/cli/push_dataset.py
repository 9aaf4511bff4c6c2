"""The ``push-dataset`` subcommand: publish a synthesized dataset folder to the Hub with its card."""

from __future__ import annotations

import argparse
import sys
import tempfile
import os
from pathlib import Path
from typing import Any

from ..hub.publish import HubPublishError, prepare_dataset_folder, push_dataset_to_hub



# ---------------------------------------------------------------------------------------------- CLI
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--token", default=None,
                        help="Hub token (default: HF_TOKEN or the login cache; prefer those over this flag).")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created if missing).")
    parser.add_argument("--commit-message", default=None, help="Commit message (default: one naming what is uploaded).")
    parser.add_argument("--license", default=None, help="Card licence id, e.g. apache-2.0 (dataset default: other).")
    parser.add_argument("--language", nargs="+", default=None, help="Card language code(s) (default: en).")
    parser.add_argument("--tags", nargs="+", default=None, help="Extra card tags.")
    parser.add_argument("--description", default=None, help="A paragraph for the card.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Write the card and list every file that would be uploaded, with sizes; upload nothing.")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")


def card_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("license", "language", "tags", "description"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``context-synthesis push-dataset DIR REPO_ID [...]``."""
    parser.add_argument("directory", help="Folder written by `context-synthesis synthesize --output`.")
    parser.add_argument("repo_id", help="Dataset repo, e.g. my-org/long-context-sft.")
    parser.add_argument("--max-shard-size", default="500MB", help="Upper bound of one parquet shard, e.g. 500MB.")
    parser.add_argument("--pretty-name", default=None, help="Card title (default: the repo name).")
    add_common_arguments(parser)


def check_push_arguments(args: argparse.Namespace, command: str, *, needs: str, what: str) -> Any:
    """The problems of a push's positional arguments, all together (a :class:`SetupProblems` the caller
    may add to): ``directory`` is a folder holding ``needs``, ``repo_id`` reads ``namespace/name``."""
    from ..utils.checks import HUB_ID, SetupProblems

    problems = SetupProblems(command)
    folder = Path(args.directory)
    if not folder.is_dir():
        problems.add("DIR", f"{args.directory!r} is not a folder ({what})")
    elif not (folder / needs).exists():
        problems.add("DIR", f"{args.directory!r} holds no {needs}: is it {what}?")
    if not HUB_ID.match(args.repo_id or ""):
        problems.add("REPO_ID", f"{args.repo_id!r} is not a Hub repo id (namespace/name, or name in your namespace)", bad_value=True)
    return problems


def run(args: argparse.Namespace) -> int:
    check_push_arguments(args, "push-dataset", needs="data",
                         what="a folder written by `context-synthesis synthesize --output`").raise_if_any()
    kwargs = card_kwargs(args)
    if args.pretty_name:
        kwargs["pretty_name"] = args.pretty_name
    if getattr(args, "dry_run", False):
        with tempfile.TemporaryDirectory(prefix="context-synthesis-dry-run-") as tmp:
            prepare_dataset_folder(args.directory, tmp, repo_id=args.repo_id, max_shard_size=args.max_shard_size, **kwargs)
            print(upload_listing(tmp, args.repo_id, "dataset", args.private))
        return 0
    try:
        info = push_dataset_to_hub(
            args.directory, args.repo_id, token=args.token, private=args.private, revision=args.revision,
            max_shard_size=args.max_shard_size, commit_message=args.commit_message, **kwargs,
        )
    except HubPublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed dataset {args.repo_id}: {info.commit_url}")
    return 0


def upload_listing(folder: str | os.PathLike[str], repo_id: str, repo_type: str, private: bool) -> str:
    """What a push would upload: every file of the prepared ``folder`` with its size (``--dry-run``)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"dry run: would upload {len(files)} files ({total / 1e6:.2f} MB) to {repo_type} "
             f"{repo_id} ({'private' if private else 'public'} if created) in one commit:"]
    lines += [f"  {p.relative_to(root).as_posix():<48} {p.stat().st_size / 1e6:10.3f} MB" for p in files]
    return "\n".join(lines)
