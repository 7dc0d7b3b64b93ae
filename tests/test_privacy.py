"""No saved or published record holds a path of the machine that made it; the local source model is still found.

The end-to-end test prunes, evaluates, writes the card and recovers with every input in a folder whose path is
unmistakable, then looks for that path (and the home folder) in every byte of every file written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from optimum_depth.cli import main
from optimum_depth.privacy import (
    data_identity,
    find_local_model,
    is_hub_id,
    model_digest,
    public_model_source,
    public_name,
    public_record,
    remember_local_model,
)

from tiny_models import DATA_DIR, STORIES_PATH

SECRET = "private-machine-folder-9f3c"


def test_local_paths_become_names_and_hub_ids_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert public_name("/srv/someone/corpora/calib") == "calib"
    assert public_name("~/models/llama/") == "llama"
    assert public_name("./data") == "data" and public_name("../x/y.jsonl") == "y.jsonl"
    assert public_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert public_name("self-generated") == "self-generated" and public_name(3) == 3
    record = {"a": ["/srv/x/data.json", {"b": "/opt/m"}], "c": "wikitext2", "n": None}
    assert public_record(record) == {"a": ["data.json", {"b": "m"}], "c": "wikitext2", "n": None}


def test_data_is_identified_by_name_hash_and_size(tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "a.txt").write_text("first document\n")
    (tmp_path / "calib" / "b.jsonl").write_text('{"text": "second"}\n')
    single = data_identity(tmp_path / "calib" / "a.txt")
    assert single == {
        "name": "a.txt",
        "sha256": hashlib.sha256(b"first document\n").hexdigest(),
        "bytes": len(b"first document\n"),
    }
    folder = data_identity(tmp_path / "calib")
    assert folder["name"] == "calib" and folder["files"] == 2 and folder["bytes"] == 15 + 19
    (tmp_path / "calib" / "a.txt").write_text("first document, edited\n")
    assert data_identity(tmp_path / "calib")["sha256"] != folder["sha256"]  # a changed file is hashed again
    assert data_identity(tmp_path / "missing.txt") == {"name": "missing.txt"}


def test_a_local_source_model_is_named_and_found_again_only_on_this_machine(stories_path, tmp_path):
    folder = tmp_path / SECRET / "stories"
    shutil.copytree(stories_path, folder)
    name, digest = public_model_source(str(folder))
    assert name == "stories" and digest.startswith("sha256:") and digest == model_digest(folder)
    assert find_local_model(digest) == folder
    assert public_model_source("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    assert find_local_model(digest) is None  # the folder now holds another model
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    assert find_local_model(digest) is None
    remember_local_model(moved, model_digest(moved))
    assert find_local_model(model_digest(moved)) == moved
    assert find_local_model(None) is None


def _private_inputs(tmp_path: Path) -> dict[str, Path]:
    """The model and every data file under one unmistakable folder."""
    root = tmp_path / SECRET
    shutil.copytree(STORIES_PATH, root / "models" / "stories")
    shutil.copytree(DATA_DIR / "calib", root / "data" / "calib")
    for sub in ("wikitext2", "piqa"):
        shutil.copytree(DATA_DIR / sub, root / "data" / sub)
    (root / "data" / "alpaca").mkdir()
    records = json.loads((DATA_DIR / "alpaca" / "alpaca_small_antelofski.json").read_text())[:40]
    (root / "data" / "alpaca" / "alpaca.json").write_text(json.dumps(records))
    return {"root": root, "model": root / "models" / "stories", "data": root / "data"}


def _leaks(folder: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {s}" for s in secrets if s.encode() in data]
    return found


@pytest.mark.skipif(not (STORIES_PATH.is_dir() and DATA_DIR.is_dir()), reason="needs ../shared")
def test_prune_evaluate_card_and_recover_write_no_local_path(tmp_path, monkeypatch):
    inputs = _private_inputs(tmp_path)
    out = tmp_path / SECRET / "outputs"
    monkeypatch.chdir(inputs["root"])
    model, data = str(inputs["model"]), inputs["data"]
    prune = ["prune", "--model", model, "--calibration", str(data / "calib"), "--num-layers-to-remove", "1"]
    assert main([*prune, "--compensation", "linear_ls", "--output-dir", str(out / "pruned")]) == 0
    assert main(["score", "--model", "./models/stories", "--calibration", "data/calib", "--output-dir", "score"]) == 0
    evaluate = ["evaluate", "--model", str(out / "pruned"), "--dense-model", model, "--data-dir", str(data)]
    evaluate += ["--max-windows", "2", "--zero-shot", "piqa", "--limit", "2", "--output-dir", str(out / "eval")]
    assert main(evaluate) == 0
    card = ["card", str(out / "pruned"), "--results", str(out / "eval" / "evaluation_results.json")]
    assert main(card) == 0
    recover = ["recover", str(out / "pruned"), "--objective", "kd", "--data", str(data / "alpaca" / "alpaca.json")]
    recover += ["--max-steps", "1", "--batch-size", "2", "--block-size", "32", "--max-examples", "8"]
    assert main([*recover, "--output-dir", str(out / "recovered")]) == 0  # the teacher is found without --teacher

    secrets = [SECRET, str(tmp_path), str(Path.home())]
    for folder in (out / "pruned", out / "eval", out / "recovered", inputs["root"] / "score"):
        assert _leaks(folder, secrets) == [], folder
    config = json.loads((out / "pruned" / "config.json").read_text())
    assert config["source_model"] == "stories" and config["source_model_digest"].startswith("sha256:")
    assert config["pruning"]["calibration"]["source"] == "calib"
    assert config["pruning"]["calibration"]["source_sha256"] == data_identity(data / "calib")["sha256"]
    recovery = json.loads((out / "recovered" / "config.json").read_text())["recovery"]
    assert recovery["data"] == "alpaca.json" and recovery["objective"] == "kd" and recovery["steps"] == 1
    assert recovery["tokens"] > 0 and recovery["learning_rate"] == 1e-4
    card_text = (out / "pruned" / "README.md").read_text()
    assert "A depth-pruned version of `stories`" in card_text and "base_model" not in card_text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
        ("gpt2", True),
        ("org/name/extra", False),
        ("./org/name", False),
        ("/abs/org/name", False),
        ("~/model", False),
        ("org/na me", False),
        ("", False),
        (None, False),
        (Path("org/name"), False),
    ],
)
def test_is_hub_id_by_its_spelling(name, expected):
    assert is_hub_id(name) is expected


def test_an_existing_local_path_is_no_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("org/model") and is_hub_id("model.gguf")
    (tmp_path / "org" / "model").mkdir(parents=True)
    (tmp_path / "model.gguf").write_bytes(b"")
    assert not is_hub_id("org/model") and not is_hub_id("model.gguf")
