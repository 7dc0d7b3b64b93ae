"""Calibration sources: strings, files, datasets, tensors, batches, self-generated; seeded."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from optimum_depth import ConfigError, DataError, prepare_calibration
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
    ids = torch.arange(3, 200)
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
