"""One test per entry of ``optimum_depth.modeling.transformers_compat``: what each assumes of transformers.

Checked on transformers 5.24 (the lowest release ``pyproject.toml`` admits, CI's lowest-versions job) and 5.25 (the
newest on 2026-12-07, CI's main job).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import transformers
from transformers import AutoConfig, LlamaConfig
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import LlamaForCausalLM, LlamaModel

import optimum_depth
from optimum_depth.modeling import transformers_compat
from optimum_depth.modeling.transformers_compat import (
    CACHE_KWARG,
    CODE_VERSION,
    TESTED_TRANSFORMERS,
    register_deferred_config,
    untested_transformers_message,
)

ROOT = Path(__file__).parent.parent.parent


def test_cache_kwarg_is_the_cache_argument_and_output_field_of_transformers_models():
    # 5.24, 5.25: `cache` replaced `past_key_values` (still accepted, deprecated)
    assert CACHE_KWARG in inspect.signature(LlamaModel.forward).parameters
    assert CACHE_KWARG in inspect.signature(LlamaForCausalLM.forward).parameters
    assert CACHE_KWARG in BaseModelOutputWithPast.__dataclass_fields__


@pytest.mark.parametrize(
    ("installed", "warns"),
    [("5.24.0", False), ("5.24.3", False), ("5.25.0", False), ("5.25.1rc0", False), ("5.23.0", True),
     ("5.26.0", True), ("6.0.0", True)],
)  # fmt: skip
def test_untested_transformers_message_names_both_versions_and_the_fix(installed, warns):
    message = untested_transformers_message(installed)
    if not warns:
        assert message is None
        return
    assert message is not None
    for part in (installed, CODE_VERSION, *TESTED_TRANSFORMERS, "optimum-depth upgrade"):
        assert part in message


def test_the_recorded_versions_are_the_package_version_and_the_tested_range():
    assert optimum_depth.__version__ == CODE_VERSION
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    transformers_spec = next(d for d in declared if d.startswith("transformers"))
    lowest = re.search(r">=\s*([\d.]+)", transformers_spec).group(1)
    assert lowest.startswith(TESTED_TRANSFORMERS[0])
    constraints = (ROOT / "ci" / "lowest-constraints.txt").read_text()
    assert re.search(rf"^transformers=={re.escape(TESTED_TRANSFORMERS[0])}\.\d+$", constraints, re.M)
    # CI's newest job tests whatever pip resolves: a newer release must be added to the range once the suite
    # passes on it, so that checkpoints written from now on do not warn under it (and no untested one is claimed).
    assert untested_transformers_message(transformers.__version__) is None, (
        f"transformers {transformers.__version__} is outside TESTED_TRANSFORMERS={TESTED_TRANSFORMERS}: if the rest "
        "of the suite passes, extend the range in optimum_depth/modeling/transformers_compat.py."
    )


def test_auto_config_accepts_a_deferred_config_and_builds_the_real_class():
    # 5.24, 5.25: AutoConfig.register checks the model type only of PreTrainedConfig subclasses;
    # from_pretrained calls `from_dict`, for_model calls the class.
    loads = []

    class OptimumDepthProbeConfig(LlamaConfig):
        model_type = "optimum_depth_probe"

    def load():
        loads.append(1)
        return OptimumDepthProbeConfig

    register_deferred_config("optimum_depth_probe", load)
    assert loads == []  # nothing is imported at registration
    built = AutoConfig.for_model("optimum_depth_probe", hidden_size=24)
    assert type(built) is OptimumDepthProbeConfig and built.hidden_size == 24
    from_dict = AutoConfig.for_model("optimum_depth_probe").__class__.from_dict({"hidden_size": 40})
    assert from_dict.hidden_size == 40 and loads


def test_the_deferred_registration_falls_back_to_the_real_class_where_refused(monkeypatch):
    registered = {}

    def strict_register(model_type, config, exist_ok=False):
        if not issubclass(config, transformers.PreTrainedConfig):
            raise ValueError("not a config class")
        registered[model_type] = config

    monkeypatch.setattr(transformers_compat, "_register_with_auto_config", strict_register)
    register_deferred_config("optimum_depth_probe_strict", lambda: LlamaConfig)
    assert registered == {"optimum_depth_probe_strict": LlamaConfig}


def test_a_bare_import_is_enough_for_auto_config_and_stays_light(tmp_path):
    script = (
        "import sys, optimum_depth, json\n"
        "from transformers import AutoConfig\n"
        "heavy = [m for m in sys.modules if m.startswith('transformers.models.') and "
        "m.rsplit('.', 1)[-1].startswith(('configuration_', 'modeling_')) and 'auto' not in m]\n"
        "config = AutoConfig.for_model('pruned_qwen2', num_hidden_layers=2)\n"
        "print(json.dumps([heavy, type(config).__module__, type(config).__name__]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    heavy, module, name = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert (module, name) == ("optimum_depth.modeling.configuration_pruned", "PrunedQwen2Config")
