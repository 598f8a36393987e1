"""Module boundaries of the package: no import cycles, no imports of another module's private names.

The import graph is read with :mod:`ast` from the source files (nothing is imported): every
``import``/``from ... import`` statement anywhere in a module counts, function-level imports
included (a deferred import hides a cycle, it does not remove it), relative (``from .x import y``,
``from . import x``) and absolute (``seqcirc_utils.x``) alike. A name is private when it starts
with one underscore (dunders such as ``__version__`` are public).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "seqcirc_utils"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute module name of a ``from ... import`` (relative levels resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a plain module's ``.`` is its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], list[str]]:
    """``(graph, private_imports)`` of the package under ``root``.

    ``graph[m]`` is the set of the package's modules that module ``m`` imports (any depth in the
    file); ``private_imports`` lists ``"m: imports _name from other"`` for every private name taken
    from another module of the package (or a private module of it).
    """
    files = {(_module_name(p, root, package)): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []

    def target_modules(name: str) -> str | None:
        """The package module ``name`` refers to (itself, or its nearest enclosing package module)."""
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        tgt = target_modules(alias.name)
                        if tgt and tgt != mod:
                            graph[mod].add(tgt)
                        if any(_is_private(p) for p in alias.name.split(".")[1:]):
                            private.append(f"{mod}: imports private module {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_package, node)
                if not (src == package or src.startswith(package + ".")):
                    continue
                if any(_is_private(p) for p in src.split(".")[1:]):
                    private.append(f"{mod}: imports from private module {src}")
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    if sub in modules:  # ``from . import x``: the submodule x
                        if sub != mod:
                            graph[mod].add(sub)
                        if _is_private(alias.name):
                            private.append(f"{mod}: imports private module {sub}")
                        continue
                    tgt = target_modules(src)
                    if tgt and tgt != mod:
                        graph[mod].add(tgt)
                        if _is_private(alias.name):
                            private.append(f"{mod}: imports {alias.name} from {tgt}")
    return graph, private


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (or a self-loop), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan; the package is small, recursion depth is no concern
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


# --------------------------------------------------------------------------- the package


#: The layers, bottom first: a module imports only from its own layer or the layers before it.
LAYERS = ("core", "models", "tasks", "scoring", "discovery", "evaluation", "mechanisms", "report", "workflow")


def layer_of(module: str) -> str | None:
    """The layer (first subpackage) of a package module; None for the package itself and ``data``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_package_has_no_import_cycles():
    graph, _ = import_graph(ROOT, PACKAGE)
    assert len(graph) > 10  # the walk found the package
    assert f"{PACKAGE}.discovery.edges.patching" in graph[f"{PACKAGE}.discovery.edges.attribution"]  # and its edges
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_lives_in_a_layer():
    graph, _ = import_graph(ROOT, PACKAGE)
    stray = sorted(m for m in graph if layer_of(m) is None and m not in (PACKAGE, f"{PACKAGE}.data"))
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"
    assert {layer_of(m) for m in graph} - {None} == set(LAYERS)


def test_layers_import_only_downward():
    graph, _ = import_graph(ROOT, PACKAGE)
    upward = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if layer_of(m) and layer_of(t) and LAYERS.index(layer_of(t)) > LAYERS.index(layer_of(m))
    ]
    assert not upward, "\n".join(upward)


def test_every_subpackage_says_what_it_is():
    for init in sorted(ROOT.rglob("__init__.py")):
        if init.parent.name == "data":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 8, f"{init.relative_to(ROOT)}: needs a one-paragraph docstring"


def test_readme_layout_names_every_module():
    """The README's layout table is the newcomer's map: every module of the package has a row."""
    readme = (ROOT.parent / "README.md").read_text()
    missing = [
        str(p.relative_to(ROOT.parent))
        for p in sorted(ROOT.rglob("*.py"))
        if p.name != "__init__.py" and f"`{p.relative_to(ROOT.parent).as_posix()}`" not in readme
    ]
    assert not missing, f"README layout table lacks rows for {missing}"


def test_package_imports_no_private_names():
    _, private = import_graph(ROOT, PACKAGE)
    assert not private, "\n".join(private)


def test_edge_search_is_its_own_module():
    """Issue 11: the mechanism (patching) knows nothing of the search built on it."""
    graph, _ = import_graph(ROOT, PACKAGE)
    edges = f"{PACKAGE}.discovery.edges"
    assert f"{edges}.search" in graph
    assert graph[f"{edges}.patching"].isdisjoint({f"{edges}.search", f"{edges}.attribution"})


def test_choices_are_torch_free_leaves():
    """Issue 11: the CLI validates before loading anything, so the modules its parser reads import no other
    package module (options, errors) or only types (records), and no third-party library at module level."""
    graph, _ = import_graph(ROOT, PACKAGE)
    core = f"{PACKAGE}.core"
    assert graph[f"{core}.options"] <= {f"{core}.errors"}
    assert graph[f"{core}.records"] <= {f"{core}.types", f"{core}.errors"}
    for name in ("options", "types", "records", "errors", "paths"):
        path = ROOT / "core" / f"{name}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        top |= {
            node.module.split(".")[0]
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
        }
        assert top.isdisjoint({"torch", "transformer_lens", "transformers", "pandas", "numpy"}), (name, top)


def test_layer_checker_flags_an_upward_import(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/a.py": "from pkg.report.b import f\n",
            "report/__init__.py": "",
            "report/b.py": "from pkg.core.a import g\n",
        },
    )
    graph, _ = import_graph(pkg, "pkg")
    layers = {m: m.split(".")[1] if m.count(".") else None for m in graph}
    assert graph["pkg.core.a"] == {"pkg.report.b"} and layers["pkg.core.a"] == "core"
    assert LAYERS.index(layers["pkg.report.b"]) > LAYERS.index(layers["pkg.core.a"])  # what the test above flags


# --------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for name, text in files.items():
        p = pkg / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return pkg


def test_checker_finds_function_level_cycle_and_private_names(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from .b import f\n",
            "b.py": "def f():\n    from pkg.c import g\n    return g\n",
            "c.py": "import pkg.a\nfrom . import _hidden\n",
            "_hidden.py": "",
            "d.py": "from .a import _x, __version__\nfrom .sub.e import _y\nfrom . import a\n",
            "sub/__init__.py": "",
            "sub/e.py": "from ..d import z\nfrom . import f\n",
            "sub/f.py": "from .. import d\n",
            "lone.py": "import os\nfrom os import path as _p\n",
        },
    )
    graph, private = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a", "pkg._hidden"}
    assert graph["pkg.d"] == {"pkg.a", "pkg.sub.e"}
    assert graph["pkg.sub.e"] == {"pkg.d", "pkg.sub.f"} and graph["pkg.sub.f"] == {"pkg.d"}
    assert graph["pkg.lone"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.sub.e", "pkg.sub.f"]]
    assert sorted(private) == [
        "pkg.c: imports private module pkg._hidden",
        "pkg.d: imports _x from pkg.a",
        "pkg.d: imports _y from pkg.sub.e",
    ]


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"x": {"y"}, "y": set()}, []),
        ({"x": {"x"}}, [["x"]]),
        ({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}, [["x", "y", "z"]]),
    ],
)
def test_find_cycles_brute_force(edges, expected):
    assert find_cycles(edges) == expected
