"""The shape of the house (DESIGN.md § Layout): one package per stage of the road, imports one way, no cycles.

Every ``import`` in ``sed/`` counts, also those inside functions: a function-level import that
only hides a cycle is still a cycle. ``from pkg import sub`` of a submodule is an edge to the
submodule; the parent packages Python initialises on the way are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SED = Path(__file__).resolve().parents[1] / "sed"

#: the road, top to bottom: a module may import its own rank and below, never above
RANKS = {
    "sed": 8,
    "sed.__main__": 8,
    "sed.cli": 7,
    "sed.serve": 6,
    "sed.training": 5,
    "sed.inference": 5,
    "sed.export": 5,
    "sed.tasks": 4,
    "sed.models": 3,
    "sed.augment": 2,
    "sed.data": 2,
    "sed.losses": 2,
    "sed.metrics": 2,
    "sed.audio": 1,
    "sed.errors": 0,
    "sed.fileio": 0,
    "sed.checkpoint": 0,
    "sed.version": 0,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SED.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SED.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(current: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current if _is_package(current) else current.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def imports_of(name: str) -> set[str]:
    """The sed modules that module ``name`` imports anywhere in its source."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(name, node)
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [mod, *subs]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t != name)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def _rank(name: str) -> int:
    key = next(
        (k for k in sorted(RANKS, key=len, reverse=True) if name == k or name.startswith(k + ".")), None
    )
    assert key is not None, f"{name} is not in the layout of DESIGN.md; place it in a stage package"
    return RANKS[key]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_there_are_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_hidden_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_imports_run_down_the_road():
    upward = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if _rank(b) > _rank(a)]
    assert upward == []


#: sed.data inside, bottom to top: the clip record, the corpus readers, then what is built on them
DATA_LAYERS = {
    "sed.data.clips": 0,
    "sed.data.events": 0,
    "sed.data.corpora": 1,
    "sed.data.synth": 2,
    "sed.data.shards": 2,
    "sed.data.modules": 3,
}


def _data_layer(name: str) -> tuple[str, int]:
    key = next((k for k in DATA_LAYERS if name == k or name.startswith(k + ".")), None)
    assert key is not None, f"{name} is not in a layer of sed.data (DATA_LAYERS); place it in a sub-package"
    return key, DATA_LAYERS[key]


def test_data_modules_live_in_the_data_layers():
    data = sorted(n for n in MODULES if n.startswith("sed.data."))
    assert data and all(_data_layer(n) for n in data)
    assert {p.name for p in (SED / "data").glob("*.py")} == {"__init__.py", "clips.py", "events.py"}


def test_data_imports_run_down_its_layers():
    # a sub-package may import its own modules and lower layers, never a sibling of its layer or one above
    data = [n for n in MODULES if n.startswith("sed.data.")]
    wrong = []
    for a in data:
        for b in GRAPH[a]:
            if b.startswith("sed.data."):
                (pa, la), (pb, lb) = _data_layer(a), _data_layer(b)
                if pa != pb and lb >= la:
                    wrong.append(f"{a} -> {b}")
    assert wrong == []


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if n == "sed.data" or (n.startswith("sed.data.") and _is_package(n)))
)
def test_data_packages_import_nothing(name):
    # `import sed.data.corpora` must not pull torch or Lightning in: the package files are docstrings only
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    assert [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] == []


def test_function_level_imports_are_seen():
    # sed.cli.classify imports the classifier inside its verb function (startup time of `sedkit --help`)
    assert "sed.inference.classifier" in GRAPH["sed.cli.classify"]


def test_the_top_level_is_the_package_face_only():
    top = {p.name for p in SED.iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert top == {
        "__init__.py",
        "__main__.py",
        "errors.py",
        "fileio.py",
        "checkpoint.py",
        "version.py",
        "audio",
        "augment",
        "data",
        "models",
        "losses",
        "metrics",
        "tasks",
        "inference",
        "export",
        "training",
        "serve",
        "cli",
    }


def test_the_checkpoint_format_imports_no_model_code():
    assert {
        m for m in GRAPH["sed.checkpoint"] if not m.startswith(("sed.errors", "sed.fileio", "sed.version"))
    } == set()


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if n.startswith("sed.cli.") and n != "sed.cli.main")
)
def test_verb_modules_do_not_import_the_parser(name):
    assert "sed.cli.main" not in GRAPH[name]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_files_stay_small(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= 420, f"{MODULES[name]} has {lines} lines: split it by concept"


def test_metrics_reexports_its_public_api():
    import sed.metrics
    from sed.metrics import SELDMetrics2023, icbhi_score  # noqa: F401 - the ICBHI issue's example

    for name in sed.metrics.__all__:
        assert getattr(sed.metrics, name) is not None


def test_the_tree_is_formatted_and_lint_clean():
    """``ruff format`` (line length 110) and ``ruff check`` (E501 on) pass over the whole tree."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    assert ruff, "ruff is a dev dependency: pip install -e '.[dev]'"
    root = Path(__file__).resolve().parents[1]
    for args in (["format", "--check", "."], ["check", "."]):
        r = subprocess.run([ruff, *args], cwd=root, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
