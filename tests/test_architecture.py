"""The shape of the house: layers point one way, no import circle, metadata read only through its typed schema."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "training", "app", "bench")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {f"{p.parent.name}.{p.stem}": p for package in PACKAGES for p in (ROOT / package).glob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_layers_point_one_way():
    allowed = {"model": {"model"}, "training": {"model", "training"}, "app": {"model", "app"}, "bench": {"model", "bench"}}
    server_config = {"app.server_config"}  # a benchmark may set up its process as the server does, and nothing else of app
    for name, deps in _graph().items():
        package = name.split(".")[0]
        outside = {d for d in deps if d.split(".")[0] not in allowed[package]}
        assert not outside or (package == "bench" and outside <= server_config), (name, deps)


def test_no_import_circle():
    graph = _graph()

    def reaches(start, goal, seen):
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph[start])

    assert [name for name in graph if reaches(name, name, {name})] == []


def test_metadata_is_read_through_the_typed_schema():
    """No ``meta[...]``/``metadata[...]`` outside model/artifact.py: attributes of ModelMetadata instead."""
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            if path == ROOT / "model" / "artifact.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                target = node.value if isinstance(node, ast.Subscript) else None
                name = getattr(target, "id", None) or getattr(target, "attr", None)
                if name in ("meta", "metadata"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
