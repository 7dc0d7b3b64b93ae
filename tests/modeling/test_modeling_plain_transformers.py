"""A sublayer-pruned checkpoint with plain transformers: its tokenizer and config load without optimum_depth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoTokenizer

from optimum_depth import PrunedLlamaConfig, remove_sublayers, save_pruned_model
from optimum_depth.modeling.pruned_layout import block_layer_types

from tiny_models import STORIES_PATH


def _checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(STORIES_PATH)
    remove_sublayers(model, attention=[0, 2], mlp=[3])
    return save_pruned_model(model, tmp_path / "finercut", AutoTokenizer.from_pretrained(STORIES_PATH))


CHILD = textwrap.dedent(
    """
    import json, sys
    sys.modules["optimum_depth"] = None  # optimum_depth is not installed here
    from transformers import AutoConfig, AutoTokenizer
    path = sys.argv[1]
    report = {
        "tokenizer": type(AutoTokenizer.from_pretrained(path)).__name__,
        "tokenizer_trusted": type(AutoTokenizer.from_pretrained(path, trust_remote_code=True)).__name__,
        "config_trusted": type(AutoConfig.from_pretrained(path, trust_remote_code=True)).__name__,
        "ids": AutoTokenizer.from_pretrained(path)("Once upon a time")["input_ids"],
    }
    print(json.dumps(report))
    """
)


def test_tokenizer_and_config_load_with_plain_transformers(stories_path, tmp_path):
    path = _checkpoint(tmp_path)
    config = json.loads((path / "config.json").read_text())
    # attention-first: the 3 blocks with attention, then the 2 attention-free ones, in a value transformers accepts
    assert config["layer_types"] == ["full_attention"] * 3 + ["moe"] * 2
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,  # a prompt would read nothing and fail, never wait
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]  # transformers' [y/N] prompt (answered by EOF) may precede it
    report = json.loads(last[last.index("{") :])
    assert report["config_trusted"] == "PrunedLlamaConfig"
    assert report["ids"] == AutoTokenizer.from_pretrained(STORIES_PATH)("Once upon a time")["input_ids"]


@pytest.mark.parametrize("marker", ["mlp", "moe"])  # optimum-depth 0.1 wrote "mlp", 0.2 "moe", both in block order
def test_a_block_order_checkpoint_of_earlier_versions_still_loads(stories_path, tmp_path, marker):
    path = _checkpoint(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["layer_types"] = [marker, "full_attention", marker, "full_attention", "full_attention"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = PrunedLlamaConfig.from_pretrained(path)
    assert loaded.skipped_attention == [0, 2]
    assert loaded.layer_types == ["full_attention"] * 3 + ["moe"] * 2  # re-written attention-first
    assert block_layer_types(loaded) == ["moe", "full_attention", "moe", "full_attention", "full_attention"]
