"""The package's layout: no import cycle at any level, every cross-folder import pointing down the data flow,
no private name imported across modules (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = "hf_context_synthesis"
#: folder -> the package-dir mapped location of its files
MAPPED = {"dataset_scripts": ROOT / "dataset_scripts", "trainer_callbacks": ROOT / "trainer_callbacks"}
#: the data flow, top to bottom; an import between folders must point to a lower rank
RANKS = {
    "cli": 10,
    "recipe": 9,
    "training": 8,
    "trainer_callbacks": 7,
    "hub": 6,
    "evaluation": 5,
    "scale": 4,
    "dataset_scripts": 4,
    "testing": 4,
    "synthesis": 3,
    "backends": 2,
    "utils": 1,
    "_version": 0,
}


def _package_files() -> dict[str, Path]:
    """dotted module name -> file, for every module of the installed package (mapped folders included)."""
    files: dict[str, Path] = {}
    roots = [(ROOT / PKG, PKG)] + [(path, f"{PKG}.{name}") for name, path in MAPPED.items()]
    for base, prefix in roots:
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


FILES = _package_files()


def _is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of ``module``, at any depth."""
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith(PKG)]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not target.startswith(PKG):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in FILES:  # `from . import module`
                    found.append((sub, None, node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in FILES}
    for module in FILES:
        for target, _, _ in _imports(module):
            while target not in FILES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in FILES and target != module:
                graph[module].add(target)
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parent = target.rsplit(".", 1)[0]
                while parent != PKG and parent in FILES and not module.startswith(parent + "."):
                    graph[module].add(parent)
                    parent = parent.rsplit(".", 1)[0]
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the face


def test_tarjan_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_folders():
    folders: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        src = _folder(module)
        if src is None:
            continue
        for target in targets:
            dst = _folder(target)
            if dst is not None and dst != src:
                folders.setdefault(src, set()).add(dst)
                folders.setdefault(dst, set())
    assert _cycles(folders) == []


def test_every_cross_folder_import_points_down_the_data_flow():
    wrong = []
    for module, targets in _graph().items():
        src = _folder(module)
        for target in targets:
            dst = _folder(target)
            if src is None or dst is None or dst == src:
                continue
            if RANKS[dst] >= RANKS[src]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_nothing_imports_the_package_face():
    """The face (``hf_context_synthesis/__init__``) imports the builder's registration; a module importing
    the face back would be a loop through it."""
    back = [f"{m}:{line}" for m in FILES for t, _, line in _imports(m) if t == PKG and m != PKG]
    assert back == []


def test_no_private_name_imported_across_modules():
    private = [
        f"{module}:{line} imports {target}.{name}"
        for module in FILES
        for target, name, line in _imports(module)
        if name and name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert private == []


@pytest.mark.parametrize("folder", sorted(RANKS))
def test_every_ranked_folder_exists(folder):
    assert folder in {_folder(m) for m in FILES}


def test_the_scale_face_exports_the_shard_functions_without_ray():
    import sys

    import hf_context_synthesis.scale as scale
    from hf_context_synthesis.scale import sharding

    assert scale.export_cache is sharding.export_cache
    assert scale.synthesize_shard is sharding.synthesize_shard and scale.merge_shards is sharding.merge_shards
    assert "hf_context_synthesis.scale.ray_shards" not in sys.modules or "ray" in sys.modules


def test_every_subcommand_module_has_add_arguments_and_run_and_parses_its_help(capsys):
    import importlib

    from hf_context_synthesis.cli.main import COMMANDS, build_parser

    for name, (module, _) in COMMANDS.items():
        command = importlib.import_module(f"hf_context_synthesis.cli.{module}")
        assert callable(command.add_arguments) and callable(command.run), name
        with pytest.raises(SystemExit) as done:
            build_parser(only=name).parse_args([name, "--help"])
        assert done.value.code == 0, name
        assert f"usage: context-synthesis {name}" in capsys.readouterr().out


def test_python_dash_m_cli_runs_the_command_line():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "hf_context_synthesis.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("context-synthesis (hf-context-synthesis) ")


def test_every_import_of_ours_names_something_that_exists():
    """Imports inside functions run late: a moved name would fail only on that path. Resolve them all now."""
    import importlib

    missing = []
    for module in FILES:
        for target, name, line in _imports(module):
            if name is None or name == "*" or target.endswith("ray_shards"):
                continue
            found = importlib.import_module(target)
            if not hasattr(found, name) and f"{target}.{name}" not in FILES:
                missing.append(f"{module}:{line} imports {target}.{name}")
    assert missing == []
