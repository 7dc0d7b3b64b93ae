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
        ("optimum_depth.config", {"config", "constants", "errors", "persistence", "version"}),
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
    assert loaded <= allowed, loaded - allowed
    assert "torch" not in _fresh(f"import sys, {module}; print(sorted(sys.modules))").stdout


def test_every_public_name_resolves():
    for name in optimum_depth.__all__:
        assert getattr(optimum_depth, name) is not None, name
    assert set(optimum_depth.__all__) <= set(dir(optimum_depth))
    with pytest.raises(AttributeError, match="no_such_name"):
        optimum_depth.no_such_name  # noqa: B018


def test_importing_the_modeling_package_registers_the_pruned_classes():
    code = (
        "import optimum_depth.modeling; from transformers import AutoConfig; "
        "print(type(AutoConfig.for_model('pruned_llama')).__name__)"
    )
    assert _fresh(code).stdout.strip() == "PrunedLlamaConfig"
