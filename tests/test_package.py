"""The package as a whole: a light import, leaf modules that are leaves, lazy names that resolve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import optimum_depth

HEAVY = ("peft", "accelerate", "bitsandbytes", "lm_eval", "matplotlib", "datasets", "transformers.trainer")


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_loads_no_heavy_stack_and_prints_nothing():
    result = _fresh(f"import sys, json, optimum_depth; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert json.loads(result.stdout) == []
    assert result.stderr == ""


@pytest.mark.parametrize(
    "module, allowed",
    [
        (
            "optimum_depth.config",
            {"config", "compensation_config", "field_checks", "constants", "errors", "persistence", "version"},
        ),
        (
            "optimum_depth.compensation_config",
            {"compensation_config", "field_checks", "errors", "persistence", "version"},
        ),
        ("optimum_depth.field_checks", {"field_checks", "errors", "version"}),
        ("optimum_depth.plan", {"plan", "constants", "errors", "persistence", "version"}),
        ("optimum_depth.scores", {"scores", "constants", "errors", "persistence", "version"}),
        ("optimum_depth.errors", {"errors", "version"}),
        ("optimum_depth.constants", {"constants", "version"}),
    ],
)
def test_leaf_modules_import_only_leaves(module, allowed):
    code = (
        f"import sys, json, {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('optimum_depth.'))))"
    )
    loaded = {name.split(".", 1)[1] for name in json.loads(_fresh(code).stdout)}
    # besides the leaves, only what `import optimum_depth` itself loads: the registration of the pruned model types
    registration = {"modeling", "modeling.transformers_compat"}
    assert loaded <= allowed | registration, loaded - allowed - registration


def test_every_public_name_resolves():
    for name in optimum_depth.__all__:
        assert getattr(optimum_depth, name) is not None, name
    assert set(optimum_depth.__all__) <= set(dir(optimum_depth))
    with pytest.raises(AttributeError, match="no_such_name"):
        optimum_depth.no_such_name  # noqa: B018


def test_a_bare_import_registers_the_pruned_classes():
    code = (
        "import optimum_depth; from transformers import AutoConfig; "
        "print(type(AutoConfig.for_model('pruned_llama')).__name__)"
    )
    assert _fresh(code).stdout.strip() == "PrunedLlamaConfig"


def test_lowest_constraints_pin_every_declared_lower_bound():
    """ci/lowest-constraints.txt (CI's lowest-versions job) pins exactly the lower bounds pyproject.toml declares."""
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        declared += [d for d in extra if not d.startswith(("optimum-depth", "ruff", "mypy")) or name != "dev"]
    bounds = {}
    for requirement in declared:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([\w.]+)", requirement)
        if match and not requirement.startswith("optimum-depth"):
            bounds[match.group(1).lower().replace("_", "-")] = match.group(2)
    pins = {}
    for line in (root / "ci" / "lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    bounds.pop("ruff", None), bounds.pop("mypy", None)  # dev tools run at their newest release only
    assert pins.keys() == bounds.keys()
    for name, lower in bounds.items():
        assert pins[name] in (lower, lower + ".0", lower + ".0.0"), (name, pins[name], lower)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (top level, in functions, under ``TYPE_CHECKING``)."""
    import ast
    from pathlib import Path

    root = Path(optimum_depth.__file__).parent
    paths = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    graph[name].add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in paths else target)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
        graph[name] = {t for t in graph[name] if t in paths and t != name}
    return graph


def _folder(module: str, graph: dict[str, set[str]]) -> str:
    is_package = any(other.startswith(module + ".") for other in graph)
    return module if is_package else module.rsplit(".", 1)[0]


def test_no_import_cycles():
    """No module imports, even lazily, a module that imports it back (records do not render themselves, engines sit
    below the criteria, ...)."""
    graph = _import_graph()
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            module = stack.pop()
            assert module != start, f"{start} imports itself back through its imports"
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])


def test_no_folder_imports_a_folder_that_imports_it_back():
    """Sub-packages form layers: if folder A imports folder B, nothing in B imports A (the package root's modules are
    the shared bottom layer and excluded)."""
    graph = _import_graph()
    folders = {
        (_folder(a, graph), _folder(b, graph))
        for a, targets in graph.items()
        for b in targets
        if "optimum_depth" not in (_folder(a, graph), _folder(b, graph))
    }
    loops = sorted((a, b) for a, b in folders if a < b and (b, a) in folders)
    assert loops == [], loops
