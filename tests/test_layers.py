"""The package's layers (synth_ray/__init__.py): no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "synth_ray"
LAYER = {
    "config": 0,
    "sections": 0,
    "errors": 0,
    "stats": 0,
    "filter_config": 0,
    "engine": 1,
    "io": 1,
    "verify": 1,
    "methods": 2,
    "diversity": 2,
    "plan": 3,
    "runtime": 4,
    "cli": 5,
    "status": 5,
    "jobs": 5,
    "bench": 5,
    "dataset": 5,
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


def test_no_runtime_cli_submit_or_config_code_names_a_method():
    """Methods are plug-ins (methods/registry.py): the runtime, the CLI, `submit` and the
    config reach them only through `method_spec(name)` and the section table, so no import
    and no string literal there names one. (Error-stage names such as "generate" in
    runtime/units.py are not methods.)"""
    import synth_ray.methods as methods

    method_names = (*methods.registered(), "star", "evol")
    assert {"rephrase", "judge", "self_instruct"} <= set(method_names)
    named = []
    files = [*(PACKAGE / "runtime").glob("*.py"), *(PACKAGE / "cli").glob("*.py")]
    files += [PACKAGE / "jobs.py"]
    files += [PACKAGE / "config.py", PACKAGE / "sections.py", PACKAGE / "filter_config.py"]
    for file in files:
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.rsplit(".", 1)[-1]
                if node.module.startswith("synth_ray.methods.") and any(
                    last.startswith(m) for m in method_names
                ):
                    named.append(f"{file.name} imports {node.module}")
            if isinstance(node, ast.Compare):  # config.method == "self_instruct"
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in method_names:
                        named.append(f"{file.name}:{node.lineno} compares with {side.value!r}")
    assert named == []


def _imports(file: Path, modules: set[str]) -> set[str]:
    """The package modules `file` imports anywhere (in functions too), not under
    TYPE_CHECKING (never executed)."""
    tree = ast.parse(file.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "synth_ray":
                found.add(name)
    return found


def test_no_import_cycles_even_through_imports_inside_functions():
    """docs/design.md: no module imports one that imports it back; the one lookup upward is
    sections.method_sections() loading the method plug-ins."""
    files = {}
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        files[module.removesuffix(".__init__")] = file
    graph = {m: _imports(f, set(files)) - {m} for m, f in files.items()}
    graph["synth_ray.sections"].discard("synth_ray.methods")  # the plug-in registry lookup
    cycles = []
    for start in graph:  # a path back to `start`, depth first
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, cycles[:5]
