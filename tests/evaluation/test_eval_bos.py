"""The BOS rule: Gemma families get BOS on every window (auto), a wrong choice warns, calibration puts BOS per row."""

from __future__ import annotations

import logging

import pytest
from eval_helpers import CharTokenizer

from optimum_depth import prepare_calibration
from optimum_depth.errors import ConfigError
from optimum_depth.evaluation import PerplexitySettings, PerplexityText, evaluate_perplexity, make_windows
from optimum_depth.evaluation.bos import needs_bos_every_sequence
from optimum_depth.evaluation.perplexity import resolve_bos, windows_perplexity

from tiny_models import make_tiny_model

TEXT = "Gemma models are trained with a BOS token at the start of every sequence. " * 10


class NoBosTokenizer(CharTokenizer):
    bos_token_id = None


@pytest.mark.parametrize(
    ("family", "expected"), [("gemma2", True), ("gemma3_text", True), ("llama", False), ("qwen2", False)]
)
def test_needs_bos_is_a_family_fact(family, expected):
    model = make_tiny_model(family, num_hidden_layers=2)
    assert needs_bos_every_sequence(model) is expected
    assert needs_bos_every_sequence(model, CharTokenizer()) is expected
    assert needs_bos_every_sequence(model, NoBosTokenizer()) is False  # nothing to add


def test_auto_feeds_gemma_bos_on_every_window_and_others_once():
    text = [PerplexityText("demo", TEXT)]
    for family, mode in (("gemma3_text", "every"), ("llama", "first")):
        model = make_tiny_model(family, num_hidden_layers=2)
        ppl, settings = evaluate_perplexity(model, CharTokenizer(), text, seq_len=16, max_windows=3)
        assert settings["bos"] == mode and settings["bos_requested"] == "auto"
        windows = make_windows(CharTokenizer().encode(TEXT), 16, 1, mode, max_windows=3)
        assert ppl["demo"] == pytest.approx(windows_perplexity(model, windows)["perplexity"], rel=1e-9)
        if mode == "every":
            assert (windows[:, 0] == 1).all()
    assert PerplexitySettings().bos == "auto"
    with pytest.raises(ConfigError, match="bos"):
        PerplexitySettings(bos="sometimes")


def test_bos_once_on_a_model_that_needs_every_warns(caplog):
    gemma = make_tiny_model("gemma3_text", num_hidden_layers=2)
    llama = make_tiny_model("llama", num_hidden_layers=2)
    with caplog.at_level(logging.WARNING, logger="optimum_depth.evaluation.perplexity"):
        assert resolve_bos("first", llama, CharTokenizer()) == "first"
        assert resolve_bos("every", gemma, CharTokenizer()) == "every"
        assert not caplog.records
        _, settings = evaluate_perplexity(gemma, CharTokenizer(), [PerplexityText("demo", TEXT)], bos="first")
    assert settings["bos"] == "first"  # the user's explicit choice is kept ...
    assert any("gemma3_text" in r.getMessage() and "every window" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="bos"):
        resolve_bos("sometimes", llama, CharTokenizer())


def test_calibration_puts_bos_at_the_start_of_every_sequence():
    gemma = make_tiny_model("gemma3_text", num_hidden_layers=2)
    documents = [TEXT, TEXT[::-1], TEXT.upper()]
    data = prepare_calibration(documents, CharTokenizer(), model=gemma, num_samples=6, seq_len=32, seed=0)
    assert data.input_ids.shape == (6, 32) and (data.input_ids[:, 0] == CharTokenizer.bos_token_id).all()
    assert needs_bos_every_sequence(gemma, CharTokenizer())
