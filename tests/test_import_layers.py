"""The decoding modules' imports point one way: frames.py (the facade) -> decode_pyav.py /
decode_ffmpeg.py (the backends) -> infrastructure.py -> the leaves frame_plan.py and
ffmpeg_binary.py, which import nothing of ours (issue 19).

Read from the source with `ast`, imports inside functions included: a lazy import hides a circle
from Python at import time, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
LEAVES = ("frame_plan", "ffmpeg_binary")
DECODING = ("frames", "decode_pyav", "decode_ffmpeg", "decode_nvdec", "infrastructure", *LEAVES)


def _top_module(dotted: str) -> str | None:
    """The module directly under `pipeline` that a dotted name lives in (None: not ours)."""
    parts = dotted.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    return parts[1]


def _imported(path: Path) -> set[str]:
    """The modules directly under `pipeline` that the file at `path` imports, anywhere in it."""
    package = ["pipeline", *path.parent.relative_to(PACKAGE).parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_top_module(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module == "pipeline":  # `from . import x` / `from pipeline import x`: x a module
                found.update(alias.name for alias in node.names)
            elif top := _top_module(module):
                found.add(top)
    return found


def _graph() -> dict[str, set[str]]:
    """Module directly under `pipeline` (a subpackage counts as one) -> the ones it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        graph.setdefault(parts[0], set()).update(_imported(path))
    for module, imports in graph.items():
        imports.discard(module)  # within a subpackage
        imports.intersection_update(graph)  # names imported from `pipeline` that are not modules
    return graph


def _path_back(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A chain of imports from `start` back to itself, if there is one."""
    stack, seen = [[start, dependency] for dependency in sorted(graph[start])], set()
    while stack:
        chain = stack.pop()
        if chain[-1] == start:
            return chain
        if chain[-1] in seen:
            continue
        seen.add(chain[-1])
        stack += [chain + [dependency] for dependency in sorted(graph[chain[-1]])]
    return None


def test_decoding_modules_import_no_circle():
    graph = _graph()
    assert set(DECODING) - set(LEAVES) <= set(graph)
    circles = {module: _path_back(graph, module) for module in DECODING if module in graph}
    assert not any(circles.values()), {module: " -> ".join(chain)
                                       for module, chain in circles.items() if chain}


def test_leaves_import_nothing_of_ours():
    graph = _graph()
    assert {leaf: graph.get(leaf) for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_the_graph_sees_lazy_and_relative_imports():
    """The reader itself: the facade's lazy `from . import decode_pyav` inside backend()."""
    graph = _graph()
    assert {"decode_pyav", "decode_ffmpeg", "frame_plan"} <= graph["frames"]
    assert "devices" in graph["models"]  # `from .. import devices` in models/__init__.py
