"""The ``cache`` subcommand: ``context-synthesis cache --rebuild PATH`` rebuilds a damaged generation cache,
keeping every generation that can still be read."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rebuild PATH`` (the generations.sqlite file)."""
    parser.add_argument("--rebuild", metavar="PATH", required=True, help="The generations.sqlite file to rebuild.")


def run(args: argparse.Namespace) -> int:
    """Rebuild the cache and say how many generations were kept."""
    from ..synthesis.cache import GenerationCache

    kept = GenerationCache.rebuild(args.rebuild)
    print(f"rebuilt {args.rebuild}: kept {kept} generations")
    return 0
