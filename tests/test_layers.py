"""The package imports one way: layers without cycles (see "How the code is laid out" in the README).

The import graph is read from the source with ``ast`` (every ``import`` of a ``phonon_flows``
module, at module level or inside a function), so that a dependency hidden in a function body
counts like any other.

- Each module belongs to a layer; a module imports only from its own layer or from layers below.
- The graph has no cycles (within a layer too).
- An import inside a function is only for a module that pulls a heavy optional dependency
  (atomate2's VASP sets) or for a lazy re-export (a module's PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "phonon_flows"

#: layers, lowest first: (name, module prefixes)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("phonon_flows", "phonon_flows.errors", "phonon_flows.settings")),
    ("core", ("phonon_flows.core",)),
    ("schemas", ("phonon_flows.schemas",)),
    ("store", ("phonon_flows.store",)),
    ("engines", ("phonon_flows.engines",)),
    ("figures", ("phonon_flows.report", "phonon_flows.report.figures")),
    ("makers", ("phonon_flows.makers",)),
    ("flows", ("phonon_flows.flows",)),
    ("services", ("phonon_flows.runner", "phonon_flows.fireworks", "phonon_flows.results",
                  "phonon_flows.validation", "phonon_flows.demo")),
    ("reports", ("phonon_flows.report.campaign",)),
    ("cli", ("phonon_flows.cli", "phonon_flows.campaign")),
]

#: modules whose import loads a heavy optional dependency: imported inside functions on purpose
HEAVY = {
    "phonon_flows.makers.vasp": "atomate2's VASP makers and input sets (seconds to import)",
    "phonon_flows.engines.vasp": "atomate2's VASP input sets (seconds to import)",
    "phonon_flows.core.mace_committee": "torch (seconds to import; a module-level torch.nn.Module subclass)",
}

#: (importer, imported): function-local imports that are lazy re-exports, not dependencies
LAZY_REEXPORTS = {
    ("phonon_flows.store", "phonon_flows.results"): "``from phonon_flows.store import PhononResults`` (older name)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index of the layer of ``module``: the one with the longest matching prefix."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def resolve(name: str, known: set[str]) -> str | None:
    """The module of ``name`` (a module, or a name inside a module), or None outside the package."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int, str | None]]:
    """``[(imported module, line, name of the function it is imported in or None)]`` of one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            local = function
            if function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local = child.name
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in child.names] or [base]
            for name in names:
                target = resolve(name, known)
                if target is not None and target != module:
                    found.append((target, child.lineno, function))
            visit(child, local)

    visit(tree, None)
    return found


def graph() -> dict[str, list[tuple[str, int, str | None]]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_cycles():
    edges = {
        m: {t for t, _, _ in deps if (m, t) not in LAZY_REEXPORTS}
        for m, deps in graph().items()
    }
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_go_down_the_layers():
    upward = set()
    for module, deps in graph().items():
        for target, line, _ in deps:
            if (module, target) in LAZY_REEXPORTS:
                continue
            if layer_of(target) > layer_of(module):
                upward.add(
                    f"{module}:{line} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports going up the layers:\n" + "\n".join(sorted(upward))


def test_function_local_imports_only_for_heavy_modules():
    hidden = set()
    for module, deps in graph().items():
        for target, line, function in deps:
            if function is None or target in HEAVY or function == "__getattr__":  # lazy re-export (PEP 562)
                continue
            hidden.add(f"{module}:{line} imports {target} inside {function}()")
    assert not hidden, "imports hidden in functions:\n" + "\n".join(sorted(hidden))


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_find_cycle_finds_cycles(edges, expected):
    assert find_cycle(edges) == expected


def test_hidden_and_upward_imports_are_seen(tmp_path):
    """The checks read imports inside functions and relative imports."""
    src = tmp_path / "mod.py"
    src.write_text("import os\nfrom . import x\n\ndef f():\n    from phonon_flows.cli import app\n")
    found = imports_of("phonon_flows.core.mod", src, {"phonon_flows.cli", "phonon_flows.core.x"})
    assert ("phonon_flows.core.x", 2, None) in found
    assert ("phonon_flows.cli", 5, "f") in found
