"""The package's modules import one another without a circle: read from the source with ``ast``, every
``import`` of an ``nnunet_mt`` module, at module level or inside a function, is an edge, and the graph has no
cycle. A circle works only while each side imports the other late (inside a function, or through a module
``__getattr__``), and a reader has to hold both files at once to see why."""
from __future__ import annotations

import ast
from pathlib import Path

import nnunet_mt

ROOT = Path(nnunet_mt.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages as their ``__init__.py``)."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its file: for ``from X import y``, the
    submodule ``X.y`` where there is one, else ``X``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as its modules in import order, first repeated at the end; None if acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_find_cycle_names_the_modules_of_a_cycle_in_import_order():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]


def test_the_graph_holds_the_imports_it_must():
    graph = import_graph()
    # module level, a submodule by ``from package import module``, inside a function, relative
    assert "nnunet_mt.architectures.deepmedic" in graph["nnunet_mt.architectures.dense_inference"]
    assert "nnunet_mt.evaluation.diagnostics" in graph["nnunet_mt.runner.diagnostics"]
    assert "nnunet_mt.runner.methods" in graph["nnunet_mt.runner.start_model"]  # imported in check_start_options
    assert "nnunet_mt.utils.ext_trainer" in graph["nnunet_mt.runner.methods"]  # imported in check_trainers
    assert "nnunet_mt.dataset_conversion.synthetic.params" in graph["nnunet_mt.dataset_conversion.synthetic.subject"]
    assert "nnunet_mt.architectures.dense_inference" not in graph["nnunet_mt.architectures.deepmedic"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
