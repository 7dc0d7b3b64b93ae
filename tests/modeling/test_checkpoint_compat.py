"""Sublayer-pruned checkpoints across versions: fresh-process loading for every family (after a bare
``import optimum_depth``, and with ``trust_remote_code`` without the package), KV-cache generation with block 0's
attention removed, checkpoints written by optimum-depth 0.2, ``optimum-depth upgrade`` and the remote code's warning
under an untested transformers release.

CI runs this module on the newest and on the lowest transformers release that ``pyproject.toml`` admits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import optimum_depth
from finercut_references import SUPPORTED_FAMILIES
from optimum_depth.cli.main import main
from optimum_depth.constants import REMOTE_CODE_FILES
from optimum_depth.sublayers.surgery import remove_sublayers

from tiny_models import make_tiny_model, random_ids

LEGACY = Path(__file__).parent.parent / "fixtures" / "finercut_v0_2"
"""A checkpoint as optimum-depth 0.2 wrote it: block-order ``layer_types`` ("moe" at blocks 0 and 2) and its code."""

PACKAGE_MODELING = Path(optimum_depth.__file__).parent / "modeling"


def _run_child(script: str, *args: str, tmp_path: Path, without_package: bool = False) -> dict:
    """Runs ``script`` in a fresh Python (stdin closed: a trust_remote_code prompt fails, never waits)."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "child-hf"), "HF_MODULES_CACHE": str(tmp_path / "child-modules")}
    if without_package:
        env["PYTHONPATH"] = ""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    last = result.stdout.strip().splitlines()[-1]
    return json.loads(last)


def _greedy_without_cache(model, prompt: torch.Tensor, steps: int) -> list[int]:
    sequence = prompt.clone()
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(sequence).logits[0, -1].argmax()
            sequence = torch.cat([sequence, next_id[None, None]], dim=1)
    return sequence[0].tolist()


def _family_checkpoints(tmp_path: Path) -> dict:
    """One sublayer-pruned checkpoint per family, block 0's attention removed, with its reference outputs."""
    references = {}
    for family in SUPPORTED_FAMILIES:
        model = remove_sublayers(make_tiny_model(family), attention=[0, 3], mlp=[2])
        path = tmp_path / family
        model.save_pretrained(path)
        ids = random_ids(1, 7, seed=11)
        with torch.no_grad():
            logits = model(ids).logits
        references[family] = {
            "path": str(path),
            "ids": ids.tolist(),
            "logits": logits.tolist(),
            "greedy": _greedy_without_cache(model, ids, 6),
        }
    reference_file = tmp_path / "references.json"
    reference_file.write_text(json.dumps(references))
    return {"file": str(reference_file), "references": references}


LOAD_EVERY_FAMILY = """
    import json, sys
    {prelude}
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    references = json.loads(open(sys.argv[1]).read())
    report = {{"loaded_before_use": loaded_before_use}}
    for family, ref in references.items():
        model = AutoModelForCausalLM.from_pretrained(ref["path"], attn_implementation="eager", {trust})
        ids = torch.tensor(ref["ids"])
        with torch.no_grad():
            logits_match = torch.allclose(model(ids).logits, torch.tensor(ref["logits"]), atol=1e-5, rtol=0)
            generated = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
            cache = DynamicCache(config=model.config)
            model(ids, cache=cache, use_cache=True)
        report[family] = {{
            "module": type(model).__module__.split(".")[0],
            "class": type(model).__name__,
            "logits_match": bool(logits_match),
            "generate_matches": generated[0].tolist() == ref["greedy"],
            "cache_length": cache.get_seq_length(),
        }}
    print(json.dumps(report))
"""


@pytest.mark.parametrize("mode", ["bare_import", "remote_code_without_package"])
def test_every_family_loads_and_generates_in_a_fresh_process(tmp_path, mode):
    checkpoints = _family_checkpoints(tmp_path)
    if mode == "bare_import":
        prelude = (
            "import optimum_depth\n"
            "    loaded_before_use = [m for m in sys.modules if m.startswith('transformers.models.') "
            "and m.rsplit('.', 1)[-1].startswith(('configuration_', 'modeling_')) and 'auto' not in m]"
        )
        trust = ""
    else:
        prelude = 'sys.modules["optimum_depth"] = None  # not installed\n    loaded_before_use = []'
        trust = "trust_remote_code=True"
    script = LOAD_EVERY_FAMILY.format(prelude=prelude, trust=trust)
    report = _run_child(script, checkpoints["file"], tmp_path=tmp_path, without_package=mode != "bare_import")
    # a bare import registers the pruned model types without importing any family's config or modeling code
    assert report.pop("loaded_before_use") == []
    expected_module = "optimum_depth" if mode == "bare_import" else "transformers_modules"
    for family in SUPPORTED_FAMILIES:
        got = report[family]
        assert got["module"] == expected_module and got["class"].startswith("Pruned"), (family, got)
        assert got["logits_match"] and got["generate_matches"], (family, got)
        assert got["cache_length"] == 7, (family, got)


def _legacy_copy(tmp_path: Path) -> Path:
    path = tmp_path / "legacy"
    shutil.copytree(LEGACY, path)
    return path


def _expected(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = json.loads((path / "expected_logits.json").read_text())
    return torch.tensor(data["input_ids"]), torch.tensor(data["logits"])


def test_a_checkpoint_of_version_0_2_loads_and_generates_with_the_package(tmp_path):
    path = _legacy_copy(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    assert type(model).__module__.startswith("optimum_depth.")  # the package's classes, not the old copy
    assert model.config.layer_types == ["full_attention", "full_attention", "moe", "moe"]  # read attention-first
    ids, expected = _expected(path)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)
        generated = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    assert generated[0].tolist() == _greedy_without_cache(model, ids, 5)


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_upgrade_rewrites_config_and_code_and_keeps_everything_else(tmp_path, capsys):
    path = _legacy_copy(tmp_path)
    (path / "notes.txt").write_text("mine")
    (path / "pruning_plan.json").write_text('{"a record": "kept"}')
    before = _file_bytes(path)
    assert main(["upgrade", str(path)]) == 0
    assert "rewrote" in capsys.readouterr().out
    after = _file_bytes(path)
    for name in ("model.safetensors", "notes.txt", "pruning_plan.json", "expected_logits.json"):
        assert after[name] == before[name], name
    for name in REMOTE_CODE_FILES:
        assert after[name] == (PACKAGE_MODELING / name).read_bytes(), name
    config = json.loads(after["config.json"])
    assert config["layer_types"] == ["full_attention", "full_attention", "moe", "moe"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_pruned.PrunedLlamaForCausalLM"
    assert config["skipped_attention"] == [0, 2] and config["surviving_layers"] == [0, 1, 2, 3]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_upgrade_refuses_what_it_cannot_upgrade_and_changes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["upgrade", str(empty)]) == 2
    assert "config.json" in capsys.readouterr().err
    path = _legacy_copy(tmp_path)
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    weights.pop("model.layers.1.self_attn.q_proj.weight")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    before = _file_bytes(path)
    assert main(["upgrade", str(path)]) == 2
    assert "q_proj" in capsys.readouterr().err
    assert _file_bytes(path) == before
    native = tmp_path / "native"
    make_tiny_model("llama").save_pretrained(native)
    native_before = _file_bytes(native)
    assert main(["upgrade", str(native)]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert _file_bytes(native) == native_before


@pytest.mark.slow
def test_an_upgraded_checkpoint_generates_with_trust_remote_code_without_the_package(tmp_path):
    path = _legacy_copy(tmp_path)
    assert main(["upgrade", str(path)]) == 0
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    ids, expected = _expected(path)
    greedy = _greedy_without_cache(model, ids, 5)
    report = _run_child(
        """
        import json, sys
        sys.modules["optimum_depth"] = None  # not installed
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, attn_implementation="eager")
        data = json.loads(open(sys.argv[1] + "/expected_logits.json").read())
        ids = torch.tensor(data["input_ids"])
        with torch.no_grad():
            same = torch.allclose(model(ids).logits, torch.tensor(data["logits"]), atol=1e-5, rtol=0)
            generated = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
        print(json.dumps({"module": type(model).__module__.split(".")[0], "same": bool(same),
                          "generated": generated[0].tolist()}))
        """,
        str(path),
        tmp_path=tmp_path,
        without_package=True,
    )
    assert report == {"module": "transformers_modules", "same": True, "generated": greedy}
    torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["real", "5.99.0"])
def test_the_checkpoint_code_warns_once_under_an_untested_transformers(tmp_path, version):
    model = remove_sublayers(make_tiny_model("llama"), attention=[0])
    model.save_pretrained(tmp_path / "ckpt")
    report = _run_child(
        """
        import json, sys, warnings
        sys.modules["optimum_depth"] = None  # not installed
        import importlib.metadata
        from transformers import AutoModelForCausalLM
        if sys.argv[2] != "real":  # pretend another transformers release is installed
            installed = importlib.metadata.version
            importlib.metadata.version = lambda name: sys.argv[2] if name == "transformers" else installed(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
            AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
        print(json.dumps([str(w.message) for w in caught if type(w.message).__name__ == "UntestedTransformersWarning"]))
        """,
        str(tmp_path / "ckpt"),
        version,
        tmp_path=tmp_path,
        without_package=True,
    )
    if version == "real":
        assert report == []
    else:
        assert len(report) == 1
        message = report[0]
        for part in ("5.99.0", optimum_depth.__version__, "5.24", "5.25", "optimum-depth upgrade"):
            assert part in message, part
