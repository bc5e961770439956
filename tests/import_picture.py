"""The picture of the project's imports in docs/ARCHITECTURE.md, drawn from the code: `python -m tests.import_picture`
prints it, and tests/test_layering.py fails when the page holds another.

Two parts: the packages as a Mermaid graph, each arrow labelled with how many module imports it stands for;
then each package's modules by depth, a module's depth being one more than the deepest module of its own
package it imports. Depths exist only because no modules import each other in a circle.
"""

from __future__ import annotations

from tests.test_layering import LAYERS, import_graph

BEGIN = "<!-- import picture: python -m tests.import_picture -->"
END = "<!-- end of import picture -->"


def _package(module: str) -> str:
    return module.split(".")[0]


def _short(module: str) -> str:
    return module.split(".", 1)[1] if "." in module else "__init__"


def depths(graph: dict[str, set[str]], package: str) -> dict[str, int]:
    """Each module of `package` -> its depth among the package's modules (its __init__ left out: it re-exports)."""
    inside = {m: {t for t in targets if _package(t) == package and t != package and not m.startswith(t + ".")}
              for m, targets in graph.items() if _package(m) == package and m != package}
    found: dict[str, int] = {}

    def depth(module: str) -> int:
        if module not in found:
            found[module] = 0  # a circle would end here; tests/test_layering.py fails on one first
            found[module] = 1 + max((depth(t) for t in inside[module] if t in inside), default=-1)
        return found[module]

    for module in inside:
        depth(module)
    return found


def picture() -> str:
    graph = import_graph()
    edges: dict[tuple[str, str], int] = {}
    for module, targets in graph.items():
        for target in targets:
            if _package(target) != _package(module):
                edges[(_package(module), _package(target))] = edges.get((_package(module), _package(target)), 0) + 1
    counts = {package: sum(1 for m in graph if _package(m) == package) for package in LAYERS}
    lines = [BEGIN, "", "```mermaid", "flowchart BT"]
    lines += [f"    {package}[\"{package}/ ({counts[package]} module{'s' * (counts[package] > 1)})\"]"
              for package in LAYERS]
    lines += [f"    {source} -->|{count}| {target}" for (source, target), count in sorted(edges.items())]
    lines += ["```", "", "Each package's modules by depth (one imports only its package's modules of lower depth):", ""]
    for package in LAYERS:
        found = depths(graph, package) or {package: 0}  # a package of one module, its __init__
        levels = [sorted(_short(m) for m, d in found.items() if d == level) for level in range(max(found.values()) + 1)]
        lines.append(f"- `{package}/`: " + " → ".join(" · ".join(level) for level in levels))
    return "\n".join([*lines, "", END])


if __name__ == "__main__":
    print(picture())
