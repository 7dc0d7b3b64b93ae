"""The data protocol of the quality benchmark: which text calibrates, trains, selects and tests.

Four disjoint roles, so that no hyper-parameter is chosen on a set that is reported:

* **calibration** — scoring of the plain criteria (table 1's settings: ``calib/``, 10 x 128 tokens, seed 0) and the
  compensation fits (``calib/c4_demo_llamafactory.jsonl``, 300 C4 documents; the library samples 256 x 128 tokens);
* **training** — recovery on C4 validation documents 1100..1899 (the library's C4 perplexity corpus is documents
  0..1099, never used here), or on text the dense model generates itself (``"self"``);
* **validation** — every choice (the best plain criterion, the compensation variant recovery starts from, learning
  rates): 64 windows of held-out C4 documents 1900..1999 and 64 windows of PTB *valid*;
* **test** — what the README reports: WikiText-2 test and PTB test perplexity on the first 256 windows of 128 tokens,
  and seven lm-eval zero-shot tasks on their first 200 documents each.

**BOS.** Each model is fed the way it must be (:func:`optimum_depth.evaluation.bos.needs_bos_every_sequence`):

* SmolLM2 (Llama architecture): the papers' protocol, one BOS before the whole token stream (``bos="first"``);
  calibration and training sequences start with the tokenizer's BOS as the library samples them.
* Gemma-3 (``gemma3_text``): BOS at the start of *every* perplexity window (``bos="every"``: 1 + 128 tokens, 128
  predicted), every calibration sequence (the library's sampler) and every recovery training block
  (:mod:`.recovery`), and in every lm-eval request. Gemma is trained with ``<bos>`` opening each sequence and breaks
  without it: its dense WikiText-2 perplexity on the same windows is 8x higher with BOS once
  (``gemma3-270m/bos-protocol.json``), which would make every ratio to dense meaningless.

Both come from ``evaluate_perplexity(bos="auto")``, which resolves the rule per model; the mode used is in each
record (``details.perplexity_settings.bos``).

**Records** hold no machine path (:func:`portable`): data files are named relative to the shared data folder
(``shared/data/...``), the models by their Hub id and the GGUF they were rebuilt from (wheels, SHA-256).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from optimum_depth.evaluation import evaluate_perplexity
from optimum_depth.evaluation.ppl_data import PerplexityText, load_perplexity_text

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
RESULTS_DIR = ROOT / "benchmarks" / "results"
TABLE = "quality"

SCORING_CALIBRATION = {"source": str(DATA / "calib"), "num_samples": 10, "seq_len": 128, "seed": 0}
"""Table 1's calibration: the plain criteria are the library's 0.1 behaviour."""

COMPENSATION_CALIBRATION = str(DATA / "calib" / "c4_demo_llamafactory.jsonl")
C4_FILE = DATA / "c4" / "c4_validation_2k.jsonl"
TRAIN_DOCUMENTS = (1100, 1900)
VALIDATION_DOCUMENTS = (1900, 2000)
VALIDATION_WINDOWS = 64
TEST_WINDOWS = 256
SEQ_LEN = 128


def c4_documents(start: int, stop: int) -> list[str]:
    """C4 validation documents ``start``..``stop - 1`` of the shared file, in file order."""
    with C4_FILE.open(encoding="utf-8") as handle:
        rows = [json.loads(line)["text"] for line in handle if line.strip()]
    return rows[start:stop]


def validation_texts() -> list[PerplexityText]:
    """The validation corpora: held-out C4 documents and PTB valid, 64 windows each."""
    c4 = c4_documents(*VALIDATION_DOCUMENTS)
    ptb = load_perplexity_text("ptb", path=DATA / "ptb" / "ptb.valid.txt", source="local")
    return [
        PerplexityText(
            "c4_heldout", " ".join(c4), {"path": data_name(C4_FILE), "documents": list(VALIDATION_DOCUMENTS)}
        ),
        PerplexityText("ptb_valid", ptb.text, ptb.source),
    ]


def validation_perplexity(model, tokenizer, batch_size: int = 8) -> dict[str, float]:
    """Perplexity of ``model`` on :func:`validation_texts` (64 windows of 128 tokens each, BOS as the model needs)."""
    perplexity, _ = evaluate_perplexity(
        model,
        tokenizer,
        validation_texts(),
        seq_len=SEQ_LEN,
        max_windows=VALIDATION_WINDOWS,
        source="local",
        batch_size=batch_size,
        bos="auto",
    )
    return perplexity


def validation_score(perplexity: dict[str, float], dense: dict[str, float]) -> float:
    """One number to choose with: the geometric mean of the validation perplexity ratios to dense."""
    ratios = [perplexity[name] / dense[name] for name in dense]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def data_name(path: str | Path) -> str:
    """A data file's name for records: ``shared/data/<relative path>`` (never the machine's absolute path)."""
    return portable(str(path))


def _path_prefixes() -> list[tuple[str, str]]:
    from optimum_depth.loading import cache_dir

    prefixes = [
        (str(DATA.resolve()), "shared/data"),
        (str(DATA), "shared/data"),
        (str(ROOT), "."),
        (str(cache_dir()), "$OPTIMUM_DEPTH_CACHE"),
        (tempfile.gettempdir(), "$TMPDIR"),
        (str(Path.home()), "~"),
    ]
    return sorted(set(prefixes), key=lambda item: -len(item[0]))


def portable(value: Any) -> Any:
    """``value`` with every machine path in its strings replaced by a portable name, recursively.

    The shared data folder becomes ``shared/data``, the repository ``.``, the model cache ``$OPTIMUM_DEPTH_CACHE``,
    the temporary folder ``$TMPDIR`` and the home folder ``~``.
    """
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    if isinstance(value, str) and "/" in value:
        for prefix, name in _path_prefixes():
            value = value.replace(prefix, name)
    return value


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, ``None`` when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(portable(data), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
