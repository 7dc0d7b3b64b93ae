"""Calibration sources: strings, files, datasets, tensors, batches, self-generated; seeded."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from optimum_depth import ConfigError, DataError, prepare_calibration
from optimum_depth.calibration_windows import sample_windows
from optimum_depth.data import read_documents

from tiny_models import DATA_DIR, STORIES_PATH, make_tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    if not STORIES_PATH.is_dir():
        pytest.skip("stories260K tokenizer not available")
    return AutoTokenizer.from_pretrained(STORIES_PATH)


TEXTS = [" ".join(f"word{i}_{j}" for j in range(200)) for i in range(12)]


def test_strings_give_seeded_windows_starting_with_bos(tokenizer):
    a = prepare_calibration(TEXTS, tokenizer, num_samples=4, seq_len=16, seed=1)
    b = prepare_calibration(TEXTS, tokenizer, num_samples=4, seq_len=16, seed=1)
    c = prepare_calibration(TEXTS, tokenizer, num_samples=4, seq_len=16, seed=2)
    assert a.input_ids.shape == (4, 16)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, c.input_ids)
    assert (a.input_ids[:, 0] == tokenizer.bos_token_id).all()
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    for row in a.input_ids[:, 1:].tolist():  # each window is a contiguous slice of one document
        assert any(any(doc[s : s + 15] == row for s in range(len(doc) - 14)) for doc in docs)
    assert a.spec == {"num_samples": 4, "seq_len": 16, "seed": 1, "source": "list of 12 strings"}


def test_short_documents_fall_back_to_the_joined_stream(tokenizer):
    data = prepare_calibration(["a b c", "d e f g"] * 20, tokenizer, num_samples=3, seq_len=12, seed=0)
    assert data.input_ids.shape == (3, 12)
    with pytest.raises(ValueError, match="only"):
        prepare_calibration(["tiny"], tokenizer, num_samples=1, seq_len=64)


def test_files_jsonl_json_txt_and_directories(tokenizer, tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:3]))
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": "x", "input": "", "output": TEXTS[3]}]))
    (tmp_path / "c.txt").write_text("\n\n".join(TEXTS[4:6]))
    assert len(read_documents(tmp_path)) == 6
    data = prepare_calibration(tmp_path / "a.jsonl", tokenizer, num_samples=2, seq_len=8)
    assert data.input_ids.shape == (2, 8)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match="line 2"):
        read_documents(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        prepare_calibration(tmp_path / "missing.txt", tokenizer)
    with pytest.raises(ValueError, match="Unsupported"):
        (tmp_path / "d.csv").write_text("x")
        read_documents(tmp_path / "d.csv")


def test_shared_calibration_files_are_readable(tokenizer):
    if not (DATA_DIR / "calib").is_dir():
        pytest.skip("shared data not available")
    data = prepare_calibration(DATA_DIR / "calib" / "wiki_demo_llamafactory.txt", tokenizer, seq_len=128)
    assert data.input_ids.shape == (10, 128)


def test_datasets_dataset_source(tokenizer):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": TEXTS})
    data = prepare_calibration(dataset, tokenizer, num_samples=2, seq_len=10)
    expected = prepare_calibration(TEXTS, tokenizer, num_samples=2, seq_len=10)
    assert torch.equal(data.input_ids, expected.input_ids)


def test_token_tensors_and_batches():
    ids = torch.arange(3, 120)
    data = prepare_calibration(ids, num_samples=5, seq_len=7, seed=0)
    assert data.input_ids.shape == (5, 7)
    assert all((row[1:] - row[:-1] == 1).all() for row in data.input_ids)
    batches = [{"input_ids": torch.ones(2, 6, dtype=torch.long)} for _ in range(3)]
    assert prepare_calibration(batches, num_samples=5).input_ids.shape == (5, 6)
    with pytest.raises(ValueError, match="integer"):
        prepare_calibration(torch.rand(2, 4))
    with pytest.raises(ValueError, match="Unsupported"):
        prepare_calibration(42)
    with pytest.raises(ValueError, match="tokenizer"):
        prepare_calibration(TEXTS)


def test_self_generated_samples_are_seeded():
    model = make_tiny_model("llama")
    a = prepare_calibration("self", model=model, num_samples=2, seq_len=9, seed=4)
    b = prepare_calibration("self", model=model, num_samples=2, seq_len=9, seed=4)
    assert a.input_ids.shape == (2, 9) and torch.equal(a.input_ids, b.input_ids)
    assert (a.input_ids[:, 0] == model.config.bos_token_id).all()
    assert a.spec["source"] == "self-generated"
    with pytest.raises(ValueError, match="vocabulary"):
        prepare_calibration(torch.full((1, 4), 500), model=model)


def test_binary_bytes_in_a_text_file_name_the_file(tmp_path, tokenizer):
    path = tmp_path / "calib.txt"
    path.write_bytes(b"some text\n\xff\xfe\x00binary\n")
    with pytest.raises(DataError, match=r"calib\.txt.*not UTF-8"):
        prepare_calibration(str(path), tokenizer, num_samples=1, seq_len=4)


def test_token_ids_outside_the_vocabulary_are_refused():
    model = make_tiny_model("llama")
    negative = torch.tensor([[1, 2, -3, 4]])
    with pytest.raises(DataError, match="-3 is negative"):
        prepare_calibration(negative, model=model)
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        prepare_calibration(torch.tensor([[1, 2, 500, 4]]), model=model)


def test_sequences_longer_than_the_model_supports_are_refused():
    model = make_tiny_model("llama")  # max_position_embeddings=256
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        prepare_calibration("self", model=model, num_samples=1, seq_len=300)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        prepare_calibration(torch.ones(1, 300, dtype=torch.long), model=model)


# ------------------------------------------------------------------------------------------ malformed or scant text
def test_a_null_text_in_jsonl_is_refused_not_read_as_none(tmp_path):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"text": "a real document"}\n{"text": null}\n')
    with pytest.raises(DataError, match=r"calib.jsonl' line 2: `text` is null, not a string"):
        read_documents(path)


def test_json_records_without_text_are_refused_like_jsonl(tmp_path):
    records = [{"text": f"document {i}"} for i in range(10)]
    records[3] = {"body": "no text field"}
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"calib.json' record 4 has no `text` field"):
        read_documents(path)
    (tmp_path / "calib.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    with pytest.raises(DataError, match=r"calib.jsonl' line 4 has no `text` field"):
        read_documents(tmp_path / "calib.jsonl")


@pytest.mark.parametrize("source", [[], ["", "  \n"]])
def test_an_empty_calibration_list_says_so(tokenizer, source):
    with pytest.raises(DataError, match="calibration list holds no text"):
        prepare_calibration(source, tokenizer, num_samples=2, seq_len=8)


def _windows(tokens: int, num_samples: int, heldout: int, length: int = 16):
    return sample_windows([list(range(tokens))], num_samples, length, seed=0, bos=None, heldout=heldout).tolist()


def test_held_out_windows_never_share_text_with_the_fitted_ones():
    rows = _windows(1000, 40, heldout=8)  # 640 tokens of windows over 1000: random windows would overlap
    fitted, held = rows[:32], rows[32:]
    assert not {t for r in held for t in r} & {t for r in fitted for t in r}
    assert rows[:32] == _windows(1000, 40, heldout=0)[:32]  # the fitted windows are those drawn without held-out


def test_text_too_short_for_distinct_windows_is_warned_about_with_the_numbers(caplog):
    _windows(100, 20, heldout=0)
    assert "100 tokens for 20 windows of 16 tokens" in caplog.text and "overlap" in caplog.text


def test_text_too_short_for_a_held_out_window_apart_from_the_fitted_ones_is_refused():
    with pytest.raises(DataError, match=r"only 263 tokens: its 204 fitted windows of 16 tokens cover it"):
        _windows(263, 256, heldout=52)


def test_compensation_on_too_little_text_is_refused_with_the_numbers(stories_path, tmp_path, capsys):
    from optimum_depth.cli import main

    (tmp_path / "tiny.txt").write_text("Once upon a time there was a little cat. " * 20)
    argv = ["prune", "--model", str(stories_path), "--num-layers-to-remove", "1", "--compensation", "linear_ls"]
    assert main([*argv, "--calibration", str(tmp_path / "tiny.txt"), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fitted windows of 127 tokens cover it" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_compensation_fit_asks_its_held_out_windows_apart(tokenizer, monkeypatch):
    from optimum_depth import CompensationConfig, calibration
    from optimum_depth.compensation.compensate import compensation_calibration

    asked = []
    real = calibration.sample_windows
    monkeypatch.setattr(calibration, "sample_windows", lambda *a: asked.append(a[-1]) or real(*a))
    settings = CompensationConfig(num_samples=20, seq_len=16)
    data = compensation_calibration(TEXTS, tokenizer, None, settings)
    assert asked == [settings.heldout_samples] == [4] and data.num_samples == 20


def test_shared_calibration_draws_what_the_source_gives_reading_its_text_once(tokenizer, tmp_path, monkeypatch):
    from optimum_depth import calibration
    from optimum_depth.calibration import SharedCalibration

    file = tmp_path / "calib.txt"
    file.write_text("\n\n".join(TEXTS), encoding="utf-8")
    draws = [dict(num_samples=4, seq_len=16, seed=1), dict(num_samples=6, seq_len=12, seed=2, heldout=2)]
    tokenized = []
    real = calibration._tokenize_documents
    for source in (TEXTS, str(file)):
        expected = [prepare_calibration(source, tokenizer, **settings) for settings in draws]
        tokenized.clear()
        monkeypatch.setattr(calibration, "_tokenize_documents", lambda d, t: tokenized.append(1) or real(d, t))
        shared = SharedCalibration(source, tokenizer)
        got = [prepare_calibration(shared, None, **settings) for settings in draws]
        assert prepare_calibration(shared, **draws[1]) is got[1]  # a draw asked twice is made once
        assert len(tokenized) == 1  # one reading and tokenization for every draw
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a.input_ids, b.input_ids) and a.spec == b.spec
        monkeypatch.setattr(calibration, "_tokenize_documents", real)
    model = make_tiny_model("llama")
    shared = SharedCalibration(torch.arange(3, 120), None)  # not text: drawn as the tensor would be
    assert torch.equal(prepare_calibration(shared, model=model, seq_len=8).input_ids, _tensor_draw(model))
    with pytest.raises(ConfigError, match="drawn already"):
        SharedCalibration(prepare_calibration(TEXTS, tokenizer))


def _tensor_draw(model):
    return prepare_calibration(torch.arange(3, 120), model=model, seq_len=8).input_ids
