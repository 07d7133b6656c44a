"""The package's layers (synth_ray/__init__.py): no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "synth_ray"
LAYER = {
    "config": 0,
    "method_config": 0,
    "errors": 0,
    "stats": 0,
    "filter_config": 0,
    "engine": 1,
    "io": 1,
    "methods": 2,
    "diversity": 2,
    "plan": 3,
    "runtime": 4,
    "cli": 5,
    "status": 5,
    "jobs": 5,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        own = layer_of(module)
        if own is None:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synth_ray."):
                if (layer_of(node.module) or 0) > own:
                    upward.append(f"{module} imports {node.module}")
    assert upward == []


def test_every_package_module_has_a_layer():
    names = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")
    }
    assert names - {"__init__", "__main__"} <= set(LAYER)
