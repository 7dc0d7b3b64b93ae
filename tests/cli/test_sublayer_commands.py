"""``prune`` and ``quickstart`` at sublayer granularity write a *pruned* checkpoint (not the dense model beside a plan).

The reloaded checkpoint is checked in a fresh process that cannot import optimum_depth (``trust_remote_code=True``,
the code shipped beside the weights), against the logits of the dense model with the saved plan applied in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import AutoModelForCausalLM

from optimum_depth import DepthPruner, DepthPruningConfig, PruningPlan, count_parameters
from optimum_depth.cli import main

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.modules["optimum_depth"] = None  # importing optimum_depth now raises ImportError
    import torch
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
    ids = torch.tensor(json.loads(sys.argv[2]))
    with torch.no_grad():
        logits = model(ids).logits
    torch.save(logits, sys.argv[3])
    print(json.dumps({"class": type(model).__name__, "params": sum(p.numel() for p in model.parameters())}))
    """
)


def _reload_without_the_package(path, ids, tmp_path) -> tuple[dict, torch.Tensor]:
    out = tmp_path / "child_logits.pt"
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(ids.tolist()), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), torch.load(out)


def _check_checkpoint(stories_path, out, tmp_path):
    plan = PruningPlan.from_pretrained(out)
    assert plan.granularity == "sublayer" and plan.num_removed == 2
    dense = AutoModelForCausalLM.from_pretrained(stories_path).eval()
    dense_params = count_parameters(dense)
    pruner = DepthPruner(DepthPruningConfig(criterion="finercut", granularity="sublayer", num_layers_to_remove=2))
    pruner.apply(dense, plan)  # the in-memory pruned model
    ids = torch.tensor([[1, 403, 261, 372, 52, 9, 17]])
    with torch.no_grad():
        expected = dense(ids).logits
    report, logits = _reload_without_the_package(out, ids, tmp_path)
    assert report["params"] < dense_params and report["params"] == count_parameters(dense)
    if plan.removed_attention or plan.removed_mlp:
        assert report["class"].startswith("Pruned")
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["pruning"]["granularity"] == "sublayer"


def test_prune_at_sublayer_granularity_writes_the_pruned_checkpoint(stories_path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", "--model", str(stories_path), "--granularity", "sublayer", "--criterion", "finercut"]
    argv += ["--num-layers-to-remove", "2", "--num-samples", "2", "--seq-len", "32", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    before, after = printed.split("parameters ")[1].split(".")[0].split(" -> ")
    assert int(after.replace(",", "")) < int(before.replace(",", ""))
    _check_checkpoint(stories_path, out, tmp_path)


def test_quickstart_at_sublayer_granularity_writes_the_pruned_checkpoint(stories_path, tmp_path):
    out = tmp_path / "qs"
    argv = ["quickstart", "--model", str(stories_path), "--granularity", "sublayer", "--pruning-ratio", "0.2"]
    argv += ["--eval-windows", "2", "--new-tokens", "3", "--output-dir", str(out)]
    assert main(argv) == 0
    _check_checkpoint(stories_path, out, tmp_path)
    assert "finercut" in (out / "README.md").read_text()
