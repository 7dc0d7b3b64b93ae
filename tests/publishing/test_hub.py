"""push_to_hub against a loopback fake Hub (tests/hub_server.py): one commit, every file, no token leak, round trip."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.repocard_data import model_index_to_eval_results

from optimum_depth import DepthPruner, DepthPruningConfig, HubError, PruningPlan, save_pruned_model
from optimum_depth.cli import main
from optimum_depth.evaluation import ComparisonResults, EvaluationResults, LatencyRecord
from optimum_depth.publishing.cards import CardOptions
from optimum_depth.publishing.hub import PushSettings, push_to_hub

from hub_server import running_fake_hub
from tiny_models import STORIES_PATH, make_tiny_model

TOKEN = "hf_FAKEtoken4optimumDEPTHnever2leak9Xq"
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A fake Hub on 127.0.0.1 accepting ``TOKEN``; huggingface_hub is let online (LFS over HTTP, no Xet)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with running_fake_hub(tmp_path / "hub-storage", token=TOKEN) as hub:
        yield hub


def prune_tiny_llama(seed: int = 0):
    """A tiny llama with 2 of 6 blocks removed by the magnitude criterion, and its pruner."""
    model = make_tiny_model("llama", seed=seed)
    pruner = DepthPruner(
        DepthPruningConfig(criterion="magnitude", num_layers_to_remove=2, protect_first=1, protect_last=1)
    )
    pruner.prune(model)
    return model, pruner


def comparison_results() -> ComparisonResults:
    """A dense vs pruned results object, as ``optimum_depth.evaluation`` writes it."""
    settings = {"limit": 50, "num_fewshot": 0}
    latency_settings = {"device": "cpu", "dtype": "float32", "threads": 1}
    dense = EvaluationResults(
        model_name="tiny-llama",
        num_parameters=57_632,
        perplexity={"wikitext2": 101.25},
        perplexity_settings={"seq_len": 64},
        zero_shot={"piqa": {"acc": 0.52, "acc_stderr": 0.07, "acc_norm": 0.5}, "arc_easy": {"acc": 0.3}},
        zero_shot_settings=settings,
        latency=[LatencyRecord(1, 16, 8, 0.08, 200.0, 310.0)],
        latency_settings=latency_settings,
    )
    pruned = EvaluationResults(
        model_name="tiny-llama-pruned",
        num_parameters=45_344,
        perplexity={"wikitext2": 140.5},
        perplexity_settings={"seq_len": 64},
        zero_shot={"piqa": {"acc": 0.5, "acc_stderr": 0.07, "acc_norm": 0.48}, "arc_easy": {"acc": 0.28}},
        zero_shot_settings=settings,
        latency=[LatencyRecord(1, 16, 8, 0.06, 266.7, 300.0)],
        latency_settings=latency_settings,
    )
    return ComparisonResults(dense=dense, pruned=pruned)


def pushed_text(hub, repo_id: str) -> dict[str, bytes]:
    return {name: hub.read_file(repo_id, name) for name in hub.list_files(repo_id)}


# ------------------------------------------------------------------------------------------------ in-process pushes
def test_push_sends_everything_in_one_commit(fake_hub):
    model, pruner = prune_tiny_llama()
    results = comparison_results()
    commit = push_to_hub(
        model,
        "org/tiny-pruned",
        results=results,
        plan=pruner.last_plan,
        scores=pruner.last_scores,
        card=CardOptions(license="apache-2.0"),
        settings=PushSettings(private=True, token=TOKEN, endpoint=fake_hub.endpoint),
    )
    repo = fake_hub.repos["org/tiny-pruned"]
    assert repo.private
    assert [c.message for c in repo.commits] == ["initial commit", "Upload depth-pruned model (optimum-depth)"]
    assert commit.oid == repo.commits[-1].oid
    expected = {"config.json", "generation_config.json", "model.safetensors", "README.md", "pruning_plan.json"}
    expected |= {"layer_scores.json", "layer_scores.png", "evaluation_results.json", ".gitattributes"}
    assert set(fake_hub.list_files("org/tiny-pruned")) == expected
    assert repo.commits[-1].files["model.safetensors"].lfs  # weights went through the LFS upload
    assert fake_hub.read_file("org/tiny-pruned", "layer_scores.png")[:8] == b"\x89PNG\r\n\x1a\n"

    plan = PruningPlan.from_dict(json.loads(fake_hub.read_file("org/tiny-pruned", "pruning_plan.json")))
    assert plan == pruner.last_plan
    config = json.loads(fake_hub.read_file("org/tiny-pruned", "config.json"))
    assert config["surviving_layers"] == [i for i in range(6) if i not in pruner.last_plan.removed_blocks]
    pushed_results = ComparisonResults.from_dict(
        json.loads(fake_hub.read_file("org/tiny-pruned", "evaluation_results.json"))
    )
    assert pushed_results.to_dict() == results.to_dict()

    card = ModelCard(fake_hub.read_file("org/tiny-pruned", "README.md").decode())
    assert card.data.license == "apache-2.0"
    name, eval_results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "tiny-pruned"
    assert {(r.dataset_type, r.metric_type): r.metric_value for r in eval_results} == pytest.approx(
        {
            ("wikitext", "perplexity"): 140.5,
            ("ybisk/piqa", "acc"): 50.0,
            ("ybisk/piqa", "acc_norm"): 48.0,
            ("allenai/ai2_arc", "acc"): 28.0,
        }
    )
    assert "![Importance" in card.text and "(layer_scores.png)" in card.text


def test_token_never_reaches_files_or_logs(fake_hub, caplog):
    model, pruner = prune_tiny_llama()
    caplog.set_level(logging.DEBUG)
    push_to_hub(
        model,
        "leak-check",
        results=comparison_results(),
        scores=pruner.last_scores,
        settings=PushSettings(token=TOKEN, endpoint=fake_hub.endpoint),
    )
    repo_id = "fake-user/leak-check"  # no namespace: the token's user
    files = pushed_text(fake_hub, repo_id)
    assert "README.md" in files and "model.safetensors" in files
    for name, data in files.items():
        assert TOKEN.encode() not in data, name
        assert TOKEN[3:].encode() not in data, name
    assert caplog.text and TOKEN not in caplog.text and TOKEN[3:] not in caplog.text
    # The token did authenticate the writes.
    writes = [r for r in fake_hub.requests if r[0] == "POST"]
    assert writes and all(authenticated for _, _, authenticated in writes)


def test_second_push_replaces_the_checkpoint_in_one_commit(fake_hub):
    model, pruner = prune_tiny_llama()
    settings = PushSettings(token=TOKEN, endpoint=fake_hub.endpoint, max_shard_size="60KB")
    push_to_hub(model, "org/resharded", settings=settings, plot=False)
    first = fake_hub.list_files("org/resharded")
    shards = [n for n in first if n.startswith("model-") and n.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in first

    api = HfApi(endpoint=fake_hub.endpoint, token=TOKEN)
    for name in ("training_args.bin", "optimizer.pt", "sd_vae.safetensors"):  # the user's own files
        api.upload_file(path_or_fileobj=name.encode(), path_in_repo=name, repo_id="org/resharded")
    push_to_hub(model, "org/resharded", settings=PushSettings(token=TOKEN, endpoint=fake_hub.endpoint), plot=False)
    second = fake_hub.list_files("org/resharded")
    assert "model.safetensors" in second
    assert not [n for n in second if n.startswith("model-") or n.endswith(".index.json")]
    assert {"training_args.bin", "optimizer.pt", "sd_vae.safetensors"} <= set(second)  # never deleted by extension
    assert not [n for n in second if "manifest" in n]  # the local save manifest stays local
    assert len(fake_hub.repos["org/resharded"].commits) == 6  # initial, first push, 3 user uploads, second push


@pytest.mark.parametrize(
    "bad",
    ["repo_id", "plan", "results", "plot", "base_model", "peft"],
)
def test_bad_input_is_refused_before_any_request(fake_hub, tmp_path, bad):
    model, pruner = prune_tiny_llama()
    kwargs: dict = {"settings": PushSettings(token=TOKEN, endpoint=fake_hub.endpoint)}
    repo_id = "org/ok"
    if bad == "repo_id":
        repo_id = "not a/valid//id"
    elif bad == "plan":  # block 2 is still in the model
        kwargs["plan"] = PruningPlan(
            granularity="block", removed_blocks=(2,), criterion="magnitude", source_num_hidden_layers=6
        )
    elif bad == "results":
        kwargs["results"] = {"perplexity": {"wikitext2": 1.0}}
    elif bad == "plot":
        kwargs["plot"] = tmp_path / "missing.png"
    elif bad == "base_model":  # a local path is not a Hub id; the Hub would reject the card
        kwargs["card"] = lambda: CardOptions(base_model=str(tmp_path / "local" / "model"))
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError):  # ConfigError: a ValueError naming the problem
        if callable(kwargs.get("card")):
            kwargs["card"] = kwargs["card"]()
        push_to_hub(model, repo_id, **kwargs)
    assert fake_hub.requests == [] and fake_hub.repos == {}


def test_wrong_token_is_rejected_by_the_hub(fake_hub):
    model, _ = prune_tiny_llama()
    with pytest.raises(HubError, match="HTTP 401") as info:
        push_to_hub(
            model, "org/denied", settings=PushSettings(token="hf_wrong", endpoint=fake_hub.endpoint), plot=False
        )
    assert fake_hub.endpoint in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, HfHubHTTPError)
    assert fake_hub.repos == {}


def test_no_token_is_refused_before_anything_is_written_or_sent(fake_hub, monkeypatch):
    model, _ = prune_tiny_llama()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match="No Hugging Face token"):
        push_to_hub(model, "org/no-token", settings=PushSettings(endpoint=fake_hub.endpoint), plot=False)
    assert fake_hub.requests == [] and fake_hub.repos == {}


def _closed_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("online", [False, True])
def test_an_unreachable_endpoint_is_one_clear_error(monkeypatch, online):
    """With the network allowed, the HTTP client's own connection error must be caught too (not only offline mode)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", not online)
    model, _ = prune_tiny_llama()
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(HubError, match=endpoint) as info:
        push_to_hub(model, "org/nowhere", settings=PushSettings(token=TOKEN, endpoint=endpoint), plot=False)
    assert "\n" not in str(info.value) and "Nothing was committed" in str(info.value)


def test_push_to_an_unreachable_endpoint_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    model, pruner = prune_tiny_llama()
    save_pruned_model(model, tmp_path / "ckpt", plan=pruner.last_plan, scores=pruner.last_scores)
    before = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    argv = ["push", str(tmp_path / "ckpt"), "org/nowhere", "--token", TOKEN, "--endpoint", endpoint]
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("optimum-depth")]
    assert "Traceback" not in err and len(ours) == 1 and endpoint in ours[0], err
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == before


def test_fake_hub_answers_like_the_hub(fake_hub, tmp_path):
    """The error codes huggingface_hub relies on: a missing file is not a missing (or private) repo."""
    model, _ = prune_tiny_llama()
    settings = PushSettings(private=True, token=TOKEN, endpoint=fake_hub.endpoint)
    push_to_hub(model, "org/private", settings=settings, plot=False)
    kwargs = {"endpoint": fake_hub.endpoint, "cache_dir": tmp_path / "cache"}
    path = hf_hub_download("org/private", "config.json", token=TOKEN, **kwargs)
    assert Path(path).read_bytes() == fake_hub.read_file("org/private", "config.json")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/private", "adapter_config.json", token=TOKEN, **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "org/private", "config.json", token=False, endpoint=fake_hub.endpoint, cache_dir=tmp_path / "c2"
        )


# --------------------------------------------------------------------------------------- round trip, HF_ENDPOINT set
ROUND_TRIP = textwrap.dedent(
    """
    import json, logging, sys
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    sys.path.insert(0, {tests_dir!r}); sys.path.insert(0, {tests_root!r})
    from huggingface_hub.utils import logging as hf_logging
    hf_logging.set_verbosity_debug()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from test_hub import TOKEN, comparison_results, prune_tiny_llama
    from tiny_models import random_ids
    from optimum_depth.publishing.hub import PushSettings, push_to_hub

    model, pruner = prune_tiny_llama()
    tokenizer = AutoTokenizer.from_pretrained({tokenizer_path!r}) if {tokenizer_path!r} else None
    commit = push_to_hub(model, "org/round-trip", tokenizer=tokenizer, results=comparison_results(),
                         plan=pruner.last_plan, scores=pruner.last_scores,
                         settings=PushSettings(private=True, token=TOKEN))
    # Same attention kernel as the tiny model (eager), so equal weights give bit-equal logits.
    loaded = AutoModelForCausalLM.from_pretrained("org/round-trip", token=TOKEN, attn_implementation="eager").eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        torch.save({{"local": model(ids).logits, "hub": loaded(ids).logits}}, {out!r})
    report = {{"commit": commit.oid, "layers": loaded.config.num_hidden_layers,
               "surviving": loaded.config.surviving_layers,
               "same_weights": all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())}}
    # A sublayer-pruned model: the card says `import optimum_depth`, all from_pretrained needs.
    import optimum_depth
    from optimum_depth.sublayers.surgery import remove_sublayers
    sublayer = remove_sublayers(prune_tiny_llama()[0], attention=[1], mlp=[2]).eval()
    push_to_hub(sublayer, "org/sublayer", settings=PushSettings(token=TOKEN), plot=False)
    loaded_sublayer = AutoModelForCausalLM.from_pretrained(
        "org/sublayer", token=TOKEN, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        report["sublayer_equal"] = torch.equal(sublayer(ids).logits, loaded_sublayer(ids).logits)
    report["sublayer_type"] = loaded_sublayer.config.model_type
    if tokenizer is not None:
        pulled = AutoTokenizer.from_pretrained("org/round-trip", token=TOKEN)
        text = "Once upon a time there was a little dog."
        report["tokens_equal"] = pulled(text)["input_ids"] == tokenizer(text)["input_ids"]
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_push_then_from_pretrained_round_trip(tmp_path):
    """Subprocess with HF_ENDPOINT pointing at the fake Hub: push, then load with from_pretrained as the card says."""
    out = tmp_path / "logits.pt"
    tokenizer_path = str(STORIES_PATH) if STORIES_PATH.is_dir() else ""
    script = ROUND_TRIP.format(
        tests_dir=str(TESTS_DIR), tests_root=str(TESTS_DIR.parent), tokenizer_path=tokenizer_path, out=str(out)
    )
    with running_fake_hub(tmp_path / "hub-storage", token=TOKEN) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_OFFLINE="0",
            TRANSFORMERS_OFFLINE="0",
            HF_HOME=str(tmp_path / "hf-home"),
            HF_HUB_DISABLE_XET="1",
            HF_DEBUG="1",
            OMP_NUM_THREADS="1",
        )
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        files = pushed_text(hub, "org/round-trip")
        sublayer_card = ModelCard(hub.read_file("org/sublayer", "README.md").decode())
        commits = hub.repos["org/round-trip"].commits

    logits = torch.load(out)
    torch.testing.assert_close(logits["hub"], logits["local"], rtol=0, atol=0)
    assert report["same_weights"] and report["layers"] == 4 and len(report["surviving"]) == 4
    assert report["sublayer_equal"] and report["sublayer_type"] == "pruned_llama"
    assert "import optimum_depth" in sublayer_card.text
    assert "Removed attention sublayers (original blocks)" in sublayer_card.text
    if tokenizer_path:
        assert report["tokens_equal"] and "tokenizer.json" in files
    assert len(commits) == 2 and report["commit"] == commits[-1].oid
    # The downloads really came from the fake Hub, authenticated (the repo is private).
    downloads = [r for r in hub.requests if r[0] == "GET" and "/org/round-trip/resolve/" in r[1]]
    assert any(path.endswith("/model.safetensors") and authenticated for _, path, authenticated in downloads)
    # The token is nowhere: not in any pushed file, not in the (debug) logs of the client.
    assert "Authorization" in proc.stderr or "authenticated: True" in proc.stderr  # debug logging was on
    for name, data in files.items():
        assert TOKEN.encode() not in data, name
    assert TOKEN not in proc.stderr and TOKEN not in proc.stdout
