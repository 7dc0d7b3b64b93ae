"""The settings dataclasses are the one source of the measurement defaults."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from optimum_depth.evaluation import LatencySettings, PerplexitySettings, evaluate_perplexity, measure_latency


@pytest.mark.parametrize(
    ("function", "settings"), [(evaluate_perplexity, PerplexitySettings), (measure_latency, LatencySettings)]
)
def test_function_defaults_are_the_settings_defaults(function, settings):
    parameters = inspect.signature(function).parameters
    defaults = {f.name: f.default for f in dataclasses.fields(settings)}
    assert set(defaults) <= set(parameters), set(defaults) - set(parameters)  # every setting is a keyword
    assert {name: parameters[name].default for name in defaults} == defaults
    assert defaults == dataclasses.asdict(settings())  # plain defaults (no factories) that the dataclass keeps as is
