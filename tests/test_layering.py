"""The packages' layering, read from the code: imports point down settings <- models <- memory <- learner <- workers
<- agent,
no module imports another's private name, and no modules import each other in a circle (type-only imports
included: a circle of types is a circle of knowledge)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("settings", "models", "memory", "learner", "workers", "agent")  # each may import only those before it


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's scripts are loaded by Alembic, not imported
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import of a project module in `module`'s file."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            # `from package import module` imports the module
            submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in MODULES]
            found += [(sub, []) for sub in submodules]
            found.append((base, [name for name in names if f"{base}.{name}" not in MODULES]))
    return [(target, names) for target, names in found if target.split(".")[0] in LAYERS]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (packages resolved to their __init__)."""
    return {module: {target for target, _ in imports(module) if target in MODULES and target != module}
            for module in MODULES}


def test_imports_point_down_the_layers():
    upward = [f"{module} imports {target}" for module in MODULES for target, _ in imports(module)
              if LAYERS.index(target.split(".")[0]) > LAYERS.index(module.split(".")[0])]
    assert upward == []


def test_no_module_imports_a_private_name_of_another():
    private = [f"{module} imports {target}.{name}" for module in MODULES for target, names in imports(module)
               for name in names if name.startswith("_") and not name.startswith("__") and target != module]
    assert private == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_in_a_circle():
    # A package's __init__ re-exports its modules: a module importing its own package's __init__ is that
    # package's business, not a circle between modules, so those edges are left out.
    graph = {module: {target for target in targets if not module.startswith(target + ".")}
             for module, targets in import_graph().items()}
    assert cycles(graph) == []


MODEL_CLASSES = {"HybridLM", "TransformerLM"}


def asks_a_model_its_class(path: Path) -> list[int]:
    """Lines of `path` calling isinstance (or issubclass) with a model class: behaviour chosen by class."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance",
                                                                                              "issubclass"):
            named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 else set()
            named |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)} if len(node.args) > 1 \
                else set()
            if named & MODEL_CLASSES:
                lines.append(node.lineno)
    return lines


def test_nothing_above_models_asks_a_model_its_class():
    """Above `models/`, a model is asked what it can do (models.protocol.LanguageModel), never its class."""
    above = (*LAYERS[LAYERS.index("models") + 1 :], "bench")
    paths = [path for package in above for path in sorted((ROOT / package).rglob("*.py"))]
    asking = {str(path.relative_to(ROOT)): lines for path in paths if (lines := asks_a_model_its_class(path))}
    assert asking == {}


def test_the_class_check_finder_finds_one(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import models\nif isinstance(model, models.TransformerLM) or isinstance(x, int):\n    pass\n")
    assert asks_a_model_its_class(source) == [2]


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert cycles(graph) == expected


def test_the_architecture_page_holds_the_picture_the_code_draws():
    from tests.import_picture import BEGIN, END, picture

    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert BEGIN in page and END in page, "docs/ARCHITECTURE.md lost its import picture"
    drawn = page[page.index(BEGIN) : page.index(END) + len(END)]
    assert drawn == picture(), "the import picture is stale: python -m tests.import_picture, and paste it in"
