"""DepthPruningConfig validation, resolution and JSON round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from optimum_depth import ConfigError, DataError, DepthPruningConfig, PruningTargetError


def test_defaults_follow_shortened_llama_plus_heuristic():
    config = DepthPruningConfig(criterion="magnitude", pruning_ratio=0.2)
    assert (config.resolved_protect_first, config.resolved_protect_last) == (4, 2)
    assert config.protected_blocks(10) == [0, 1, 2, 3, 8, 9]
    assert (config.num_samples, config.seq_len) == (10, 128)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({}, "exactly one target"),
        ({"pruning_ratio": 0.2, "num_layers_to_remove": 2}, "exactly one target"),
        ({"pruning_ratio": 0.0}, "pruning_ratio"),
        ({"pruning_ratio": 1.0}, "pruning_ratio"),
        ({"pruning_ratio": 0.5, "criterion": "nope"}, "criterion"),
        ({"pruning_ratio": 0.5, "granularity": "head"}, "granularity"),
        ({"num_layers_to_remove": 0}, "num_layers_to_remove"),
        ({"target_num_params": -5}, "target_num_params"),
        ({"pruning_ratio": 0.5, "schedule": "sometimes"}, "schedule"),
        ({"pruning_ratio": 0.5, "schedule": "iterative"}, "iterative"),
        ({"pruning_ratio": 0.5, "prune_at_steps": [5, 3]}, "prune_at_steps"),
        ({"pruning_ratio": 0.5, "protect_first": -1}, "protect_first"),
        ({"pruning_ratio": 0.5, "protected_layers": [1, 1]}, "protected_layers"),
        ({"pruning_ratio": 0.5, "protect_first_fraction": 1.5}, "protect_first_fraction"),
        ({"pruning_ratio": 0.5, "num_samples": 0}, "num_samples"),
        ({"pruning_ratio": 0.5, "distance": "cosine"}, "distance"),
        ({"pruning_ratio": 0.5, "magnitude_p": 0}, "magnitude_p"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DepthPruningConfig(**kwargs)


def test_iterative_schedule_needs_its_step_settings():
    config = DepthPruningConfig(pruning_ratio=0.5, schedule="iterative", layers_per_step=1, prune_every_n_steps=10)
    assert config.schedule == "iterative"
    DepthPruningConfig(num_layers_to_remove=2, schedule="iterative", prune_at_steps=[0, 5])


def test_protection_resolution_and_checks():
    config = DepthPruningConfig(
        pruning_ratio=0.5,
        criterion="magnitude",
        protect_first=0,
        protect_last=1,
        protected_layers=[7],
        protect_first_fraction=0.25,
    )
    assert config.protected_blocks(8, original_indices=[0, 1, 2, 4, 5, 6, 7, 9]) == [0, 1, 6, 7]
    with pytest.raises(PruningTargetError, match=r"\[7\]"):
        config.protected_blocks(6)


def test_num_to_remove_rounds_the_ratio():
    assert DepthPruningConfig(pruning_ratio=0.25).num_to_remove(30) == 8
    assert DepthPruningConfig(pruning_ratio=0.2).num_to_remove(30) == 6
    assert DepthPruningConfig(num_layers_to_remove=3).num_to_remove(30) == 3
    assert DepthPruningConfig(target_num_params=100).num_to_remove(30) is None


def test_json_round_trip_records_version_and_drops_unknown_keys(tmp_path, caplog):
    config = DepthPruningConfig(num_layers_to_remove=3, protected_layers=[2], seed=7, calibration_dataset="x.txt")
    path = config.save_pretrained(tmp_path)
    data = json.loads(Path(path).read_text())
    assert data["optimum_depth_version"]
    assert DepthPruningConfig.from_pretrained(tmp_path) == config
    data["not_a_field"] = 1
    (tmp_path / "other.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        assert DepthPruningConfig.from_pretrained(tmp_path / "other.json") == config
    assert "not_a_field" in caplog.text


def test_loading_corrupt_or_missing_files_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        DepthPruningConfig.from_pretrained(tmp_path)
    (tmp_path / "depth_pruning_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DepthPruningConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 0, True])
def test_magnitude_exponent_must_be_finite_and_positive(value):
    with pytest.raises(ConfigError, match="magnitude_p"):
        DepthPruningConfig(pruning_ratio=0.2, magnitude_p=value)


def test_a_saved_config_without_its_criterion_is_refused_not_guessed(tmp_path):
    data = DepthPruningConfig(criterion="sleb", pruning_ratio=0.2).to_dict()
    del data["criterion"]
    (tmp_path / "depth_pruning_config.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="criterion") as info:
        DepthPruningConfig.from_pretrained(tmp_path)
    assert "depth_pruning_config.json" in str(info.value)


def test_a_file_of_another_record_type_or_a_newer_format_is_refused(tmp_path):
    data = DepthPruningConfig(pruning_ratio=0.2).to_dict()
    with pytest.raises(DataError, match="PruningPlan record"):
        DepthPruningConfig.from_dict({**data, "record_type": "PruningPlan"})
    with pytest.raises(DataError, match="format version 99"):
        DepthPruningConfig.from_dict({**data, "format_version": 99})
    assert DepthPruningConfig.from_dict(data).to_dict()["record_type"] == "DepthPruningConfig"


def test_a_pruning_ratio_that_rounds_to_nothing_is_refused_not_rounded_up():
    from optimum_depth import PruningTargetError

    config = DepthPruningConfig(criterion="magnitude", pruning_ratio=0.01)
    with pytest.raises(PruningTargetError, match=r"0\.05 of them, which rounds to none.*num_layers_to_remove=1"):
        config.num_to_remove(5)
    assert config.num_to_remove(100) == 1 and config.rounding_note(100) is None
    far = DepthPruningConfig(criterion="magnitude", pruning_ratio=0.3)
    assert far.num_to_remove(5) == 2 and "removes 2 of them (40%, not 30%)" in far.rounding_note(5)
    assert DepthPruningConfig(criterion="magnitude", pruning_ratio=0.25).rounding_note(30) is None  # 8 of 30


def test_auto_and_reconstruction_settings_round_trip_through_json(tmp_path):
    from optimum_depth import CompensationConfig

    compensation = CompensationConfig(method="reconstruct", reconstruct_steps=123, reconstruct_max_seconds=4.5)
    config = DepthPruningConfig(
        criterion="auto",
        pruning_ratio=0.2,
        compensation=compensation,
        auto_candidates=["ppl", "aware"],
        auto_max_seconds=12.0,
        auto_heldout_samples=7,
    )
    config.save_pretrained(tmp_path)
    loaded = DepthPruningConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.compensation.reconstructs and loaded.compensation.map_method == "linear_ls"
    assert DepthPruningConfig(
        criterion="auto", pruning_ratio=0.2, compensation="reconstruct"
    ).compensation.reconstructs
    # The aware selection names SLEB's rounds; with auto it is one of the candidates, not a contradiction.
    DepthPruningConfig(criterion="auto", pruning_ratio=0.2, compensation=CompensationConfig(selection="aware"))
