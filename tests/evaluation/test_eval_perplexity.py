"""Windowed perplexity: hand-checked windows, a direct per-window computation, and the corpus builders."""

from __future__ import annotations

import json
import math

import pytest
import torch
from eval_helpers import CharTokenizer

from optimum_depth.evaluation import PerplexityText, evaluate_perplexity, load_perplexity_text, make_windows, ppl_data

from tiny_models import DATA_DIR

TEXT = "The quick brown fox jumps over the lazy dog. " * 12


def test_make_windows_hand_checked():
    ids = list(range(10, 21))  # 11 tokens
    first = make_windows(ids, 4, bos_token_id=1, bos="first")
    assert first.tolist() == [[1, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]]
    every = make_windows(ids, 4, bos_token_id=1, bos="every")
    assert every.tolist() == [[1, 10, 11, 12, 13], [1, 14, 15, 16, 17]]  # tail of 3 tokens dropped
    none = make_windows(ids, 4, bos="none", max_windows=1)
    assert none.tolist() == [[10, 11, 12, 13]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bos": "sometimes"}, "bos"),
        ({"bos": "first", "bos_token_id": None}, "BOS token"),
        ({"seq_len": 1}, "seq_len"),
        ({"seq_len": 50}, "fewer than one window"),
        ({"max_windows": 0}, "max_windows"),
    ],
)
def test_make_windows_rejects_bad_input(kwargs, match):
    args = {"seq_len": 4, "bos_token_id": 1, "bos": "first", **kwargs}
    with pytest.raises(ValueError, match=match):
        make_windows(list(range(10)), **args)


def _reference_ppl(model, windows: torch.Tensor) -> float:
    """exp(mean NLL) from the model's own loss, one window at a time (all windows have equal length)."""
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    return math.exp(sum(losses) / len(losses))


@pytest.mark.parametrize("bos", ["first", "every", "none"])
def test_perplexity_matches_direct_computation(tiny_model, bos):
    tokenizer = CharTokenizer()
    text = PerplexityText(name="fox", text=TEXT)
    ppl, settings = evaluate_perplexity(tiny_model, tokenizer, datasets=[text], seq_len=16, batch_size=3, bos=bos)
    windows = make_windows(tokenizer.encode(TEXT), 16, tokenizer.bos_token_id, bos)
    assert ppl["fox"] == pytest.approx(_reference_ppl(tiny_model, windows), rel=1e-5)
    stats = settings["datasets"]["fox"]
    assert stats["num_windows"] == len(windows) == (len(TEXT) + (bos == "first")) // 16
    assert stats["num_predicted_tokens"] == windows.numel() - len(windows)
    assert settings["seq_len"] == 16 and settings["bos"] == bos


def test_perplexity_max_windows_and_c4_cap(tiny_model):
    tokenizer = CharTokenizer()
    texts = [PerplexityText("a", TEXT), PerplexityText("b", TEXT, max_windows=2)]
    ppl, settings = evaluate_perplexity(tiny_model, tokenizer, datasets=texts, seq_len=16, max_windows=3)
    assert settings["datasets"]["a"]["num_windows"] == 3
    assert settings["datasets"]["b"]["num_windows"] == 2
    mode = settings["bos"]  # "auto": every window for the Gemma families, the first one otherwise
    assert mode == ("every" if tiny_model.config.model_type.startswith("gemma") else "first")
    windows = make_windows(tokenizer.encode(TEXT), 16, 1, mode, max_windows=2)
    assert ppl["b"] == pytest.approx(_reference_ppl(tiny_model, windows), rel=1e-5)


def test_perplexity_rejects_bad_input_before_running(tiny_model):
    tokenizer = CharTokenizer()
    with pytest.raises(ValueError, match="distinct"):
        evaluate_perplexity(tiny_model, tokenizer, datasets=[PerplexityText("a", TEXT)] * 2, seq_len=16)
    with pytest.raises(ValueError, match="Unknown perplexity corpus"):
        evaluate_perplexity(tiny_model, tokenizer, datasets=["wikitext3"])
    with pytest.raises(ValueError, match="bos"):
        evaluate_perplexity(tiny_model, tokenizer, datasets=[PerplexityText("a", TEXT)], bos="maybe")


def _write_corpora(root):
    (root / "wikitext2").mkdir()
    (root / "wikitext2" / "wikitext2_test_hf_rows.json").write_text(json.dumps(["", " = A = \n", "", " b c \n"]))
    (root / "ptb").mkdir()
    (root / "ptb" / "ptb.test.txt").write_text(" the cat $\n\n a dog n't \n")
    (root / "c4").mkdir()
    with open(root / "c4" / "c4_validation_2k.jsonl", "w") as handle:
        for i in range(5):
            handle.write(json.dumps({"text": f"doc {i}", "url": "u"}) + "\n")


def test_corpus_builders_follow_the_papers(tmp_path, monkeypatch):
    _write_corpora(tmp_path)
    wiki = load_perplexity_text("wikitext2", data_dir=tmp_path, source="local")
    assert wiki.text == "\n\n = A = \n\n\n\n\n b c \n"  # "\n\n".join(rows)
    ptb = load_perplexity_text("ptb", data_dir=tmp_path)
    assert ptb.text == "the cat $ a dog n't"  # stripped sentences, " ".join (GPTQ/SparseGPT)
    ptb_shortened = load_perplexity_text("ptb", data_dir=tmp_path, join="\n\n")
    assert ptb_shortened.text == "the cat $\n\na dog n't"
    monkeypatch.setattr(ppl_data, "C4_NUM_DOCUMENTS", 3)
    c4 = load_perplexity_text("c4", data_dir=tmp_path)
    assert c4.text == "doc 0 doc 1 doc 2" and c4.max_windows == 256
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(" \n = A = \n \n b c \n")  # the raw file: blank rows hold a space
    assert load_perplexity_text("wikitext2", path=raw).text == wiki.text


def test_corpus_builder_errors_and_hub(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="ptb.test.txt"):
        load_perplexity_text("ptb", data_dir=tmp_path, source="local")
    with pytest.raises(FileNotFoundError):
        load_perplexity_text("ptb", path=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="source"):
        load_perplexity_text("ptb", source="web")
    with pytest.raises(ValueError, match="not both"):
        load_perplexity_text("ptb", path=tmp_path / "x.txt", source="hub")
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="list of strings"):
        load_perplexity_text("wikitext2", path=tmp_path / "bad.json")

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return {"sentence": [" x y ", "", "z"]}

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(FileNotFoundError, match="the Hub is not reachable"):  # tests run with HF_HUB_OFFLINE=1
        load_perplexity_text("ptb", data_dir=tmp_path, source="auto")
    assert calls == []
    monkeypatch.setattr(ppl_data, "hub_reachable", lambda: True)
    ptb = load_perplexity_text("ptb", data_dir=tmp_path, source="auto")  # no local file -> Hub
    assert calls == [(("ptb_text_only", "penn_treebank"), {"split": "test"})]
    assert ptb.text == "x y z" and ptb.source["hub"] == ["ptb_text_only", "penn_treebank"]


def test_every_documented_local_file_name_is_read_and_the_paths_tried_are_named(tmp_path):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.test.raw").write_text(" = Title = \n\n Some text here . \n")
    wiki = load_perplexity_text("wikitext2", data_dir=tmp_path)  # no HF rows JSON: the raw file is used
    assert wiki.source["file"]["name"] == "wiki.test.raw" and "Some text here" in wiki.text  # by name, no path
    assert wiki.source["file"]["bytes"] == len(" = Title = \n\n Some text here . \n")
    (tmp_path / "wikitext2" / "wiki.test.raw").write_text("")  # empty: not data
    with pytest.raises(FileNotFoundError) as info:
        load_perplexity_text("wikitext2", data_dir=tmp_path)
    assert "wikitext2_test_hf_rows.json" in str(info.value) and "wiki.test.raw" in str(info.value)
    assert "Hub" in str(info.value)


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not available")
def test_real_corpora_load():
    wiki = load_perplexity_text("wikitext2", data_dir=DATA_DIR, source="local")
    assert wiki.source["rows"] == 4358 and wiki.text.startswith("\n\n = Robert Boulter = \n")
    assert load_perplexity_text("ptb", data_dir=DATA_DIR, source="local").source["rows"] == 3761
    assert load_perplexity_text("c4", data_dir=DATA_DIR, source="local").source["rows"] == 1100
