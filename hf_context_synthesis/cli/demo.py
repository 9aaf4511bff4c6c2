"""The offline demo: a whole recipe with nothing downloaded (``context-synthesis demo``).

:func:`run_demo` builds the tiny Llama of :mod:`~hf_context_synthesis.testing.tiny_model` into
``OUTPUT_DIR/tiny-model`` (once), starts the loopback TGI-protocol server of
:mod:`~hf_context_synthesis.testing.fake_tgi`, points the recipe's ``synthesis.endpoint``,
``synthesis.tokenizer`` and ``training.model`` at them and runs the recipe
(``examples/configs/offline_demo.yaml`` by default). It takes under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The demo recipe, relative to the repository root.
DEMO_RECIPE = Path("examples") / "configs" / "offline_demo.yaml"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_recipe_path() -> Path:
    """``examples/configs/offline_demo.yaml`` of the working directory, else of this checkout."""
    for base in (Path.cwd(), _REPO_ROOT):
        if (base / DEMO_RECIPE).is_file():
            return base / DEMO_RECIPE
    raise FileNotFoundError(
        f"{DEMO_RECIPE} not found in {Path.cwd()} or {_REPO_ROOT}: run from the repository root or pass the recipe path"
    )


def _resolve_relative(path: Any, recipe_path: Path) -> Any:
    """A relative path that does not exist from the working directory, resolved against the repository
    root the recipe lives in (``examples/configs/..`` -> ``..``)."""
    if not isinstance(path, str) or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = recipe_path.resolve().parents[2] / path
    return str(candidate) if candidate.exists() else path


def ensure_tiny_model(directory: str | os.PathLike[str]) -> str:
    """Build the tiny model into ``directory`` unless it is already there; return its path."""
    from ..testing.tiny_model import make_tiny_llama

    path = Path(directory)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return str(path)
    logger.info("building the tiny demo model in %s", path)
    return make_tiny_llama(path)


def run_demo(
    recipe_path: str | os.PathLike[str] | None = None,
    *,
    output_dir: str | None = None,
    steps: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    latency: float = 0.05,
):
    """Run the offline demo recipe against the tiny model and the loopback TGI server.

    Args:
        recipe_path: The recipe (default :func:`default_recipe_path`).
        output_dir: Overrides the recipe's ``output_dir``.
        steps: Recipe steps (default: all).
        overrides: More ``section.key=value`` settings, as ``run --set``.
        dry_run: Print the plan instead of running (returns the plan text); the tiny model is still built.
        latency: Seconds the loopback server takes per request.

    Returns:
        The :class:`~hf_context_synthesis.recipe.RecipeResult` (the plan text with ``dry_run``).
    """
    from ..recipe import STEPS, load_recipe, plan, preflight, run_recipe
    from ..testing.fake_tgi import FakeTGIServer

    path = Path(recipe_path) if recipe_path is not None else default_recipe_path()
    base = load_recipe(path, [f"output_dir={output_dir}"] if output_dir else [])
    model_dir = ensure_tiny_model(Path(base.output_dir) / "tiny-model")
    with FakeTGIServer(latency=latency, capacity=8, model_id="demo/fake-tgi-generator") as tgi:
        settings = [
            f"synthesis.endpoint={tgi.url}",
            f"synthesis.tokenizer={model_dir}",
            f"training.model={model_dir}",
            *([f"output_dir={output_dir}"] if output_dir else []),
            *overrides,
        ]
        recipe = load_recipe(path, settings)
        for key in ("seed", "documents", "distractor_source"):
            if key in recipe.synthesis:
                recipe.synthesis[key] = _resolve_relative(recipe.synthesis[key], path)
        chosen = list(steps) if steps else list(STEPS)
        if dry_run:
            preflight(recipe, chosen)
            return plan(recipe, chosen)
        return run_recipe(recipe, chosen)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``context-synthesis demo``."""
    from ..recipe import STEPS

    parser.add_argument("recipe", nargs="?", default=None,
                        help=f"Recipe YAML [default: {DEMO_RECIPE}, from the working directory or this checkout].")
    parser.add_argument("--output", "--output-dir", dest="output_dir", default=None, metavar="DIR", help="Where the demo writes [default: the recipe's, runs/demo].")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="Steps to run, in the fixed order synthesize -> train -> evaluate -> push.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override one setting, as in `context-synthesis run` (repeatable).")
    parser.add_argument("--dry-run", action="store_true", help="Print what the demo would do; only the tiny model is built.")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")


def planned_folder(args: argparse.Namespace) -> str:
    """``--output`` or the demo recipe's ``output_dir``: where the log file goes."""
    from ..recipe import load_recipe

    return str(args.output_dir or load_recipe(args.recipe or default_recipe_path()).output_dir)


def run(args: argparse.Namespace) -> int:
    """Run ``context-synthesis demo``."""
    recipe_dir = planned_folder(args)
    args.run_folder = str(recipe_dir)  # where the log file goes
    out = run_demo(args.recipe, output_dir=args.output_dir, steps=args.steps, overrides=args.overrides,
                   dry_run=args.dry_run)
    if args.dry_run:
        print(out)
        return 0
    print(f"demo outputs in {recipe_dir}")
    for key, score in sorted(out.eval_scores.items()):
        print(f"  {key}: {score:.2f} (random tiny model: the number only shows the wiring)")
    return 0
