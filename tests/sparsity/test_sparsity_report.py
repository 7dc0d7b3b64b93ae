"""``SparsityResult`` follows the record conventions: stamped JSON, validated on load, files of 0.2 still read."""

from __future__ import annotations

import json

import pytest

from optimum_depth import DataError, SparsityResult
from optimum_depth.sparsity import SparsityConfig, sparsify
from optimum_depth.version import __version__

from tiny_models import make_tiny_model, random_ids


def _result():
    model = make_tiny_model("llama")
    config = SparsityConfig(method="wanda", sparsity=0.5, num_samples=8, seq_len=16)
    return sparsify(model, config, random_ids(8, 16), show_progress=False)


def test_the_result_round_trips_with_the_record_stamps(tmp_path):
    result = _result()
    path = result.save_pretrained(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == "sparsity_result.json"
    assert (data["record_type"], data["format_version"], data["optimum_depth_version"]) == (
        "SparsityResult",
        1,
        __version__,
    )
    assert data["achieved_sparsity"] == pytest.approx(0.5, abs=0.01) and "model" not in data
    loaded = SparsityResult.from_pretrained(tmp_path)
    assert loaded == result and loaded.model is None  # the model is never part of the record
    assert loaded.achieved_sparsity == result.achieved_sparsity and loaded.record() == result.record()


def test_a_file_written_before_the_record_conventions_still_loads(tmp_path):
    result = _result()
    old = {  # what SparsityResult.save_pretrained of 0.2 wrote: no record type, format or library version
        "config": {k: v for k, v in result.config.to_dict().items() if k not in ("record_type", "format_version")},
        "blocks": [b | {"sparsity": 0.5} for b in result.to_dict()["blocks"]],
        "calibration": result.calibration,
        "elapsed_seconds": 1.25,
        "achieved_sparsity": 0.5,
    }
    (tmp_path / "sparsity_result.json").write_text(json.dumps(old), encoding="utf-8")
    loaded = SparsityResult.from_pretrained(tmp_path)
    assert loaded.blocks == result.blocks and loaded.config == result.config and loaded.elapsed_seconds == 1.25


MISSING = object()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"record_type": "LayerScores"}, "LayerScores record, not a SparsityResult"),
        ({"format_version": 99}, "format version 99"),
        ({"blocks": MISSING}, "required field"),
        ({"blocks": None}, "`blocks` must be a list"),
        ({"blocks": [{"block": 0, "layer_sparsity": {}, "layer_params": {}, "colour": 1}]}, "colour"),
        ({"blocks": [{"block": 0}]}, "layer_sparsity"),
        ({"config": {"method": "pruning", "sparsity": 0.5}}, "method"),
    ],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path, change, message):
    data = {k: v for k, v in (_result().to_dict() | change).items() if v is not MISSING}
    (tmp_path / "sparsity_result.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        SparsityResult.from_pretrained(tmp_path)
    assert "sparsity_result.json" in str(error.value)
