"""The perplexity corpora of the pruning papers (WikiText-2, PTB, C4), read from local files or the Hub.

Each corpus becomes one string, built the way the papers build it:

* WikiText-2 (raw, test): the rows of HF ``wikitext-2-raw-v1`` joined with ``"\\n\\n"`` (GPTQ/SparseGPT, LLM-Pruner and
  Shortened LLaMA all do this).
* PTB: the ``sentence`` rows of HF ``ptb_text_only`` (= the stripped non-empty lines of Mikolov's ``ptb.*.txt``),
  joined with ``" "`` (GPTQ/SparseGPT, test split) or ``"\\n\\n"`` (LLM-Pruner/Shortened LLaMA, which evaluate the
  *validation* split); see :data:`PTB_JOIN`.
* C4 (validation): SparseGPT's construction, the first 1100 documents joined with ``" "`` (the caller then keeps 256
  windows of ``seq_len`` tokens).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import default_data_dir, hub_reachable, iter_jsonl, read_text
from ..errors import ConfigError, DataError, DataNotFoundError
from ..privacy import data_identity

logger = logging.getLogger(__name__)

PTB_JOIN = {"sparsegpt": " ", "shortened_llama": "\n\n"}
C4_NUM_DOCUMENTS = 1100
C4_NUM_WINDOWS = 256


@dataclass
class PerplexityText:
    """One evaluation corpus as a single string, with where it came from.

    Args:
        name: Short name used as the key of the results (``"wikitext2"``, ``"ptb"``, ``"c4"`` or your own).
        text: The joined text, tokenized once by the caller.
        source: Provenance (file path or Hub dataset, split, number of rows, join string).
        max_windows: Windows to keep at most (C4: 256 as in SparseGPT), ``None`` for all.
    """

    name: str
    text: str
    source: dict[str, Any] = field(default_factory=dict)
    max_windows: int | None = None


def _read_json_rows(path: Path) -> list[str]:
    try:
        rows = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
        raise DataError(f"{str(path)!r} must be a JSON list of strings (the HF `text` rows).")
    return rows


def _read_wikitext_rows(path: Path) -> list[str]:
    if path.suffix == ".json":
        return _read_json_rows(path)
    # wiki.test.raw: one HF row per line, newline kept as in HF
    return [line if line.strip() else "" for line in io.StringIO(read_text(path))]


def _read_ptb_sentences(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).split("\n") if line.strip()]


def _read_c4_documents(path: Path) -> list[str]:
    documents = []
    for number, record in iter_jsonl(path):
        if not isinstance(record, dict) or "text" not in record:
            raise DataError(f"{str(path)!r} line {number} has no `text` field.")
        documents.append(str(record["text"]))
        if len(documents) == C4_NUM_DOCUMENTS:
            break
    return documents


@dataclass(frozen=True)
class _CorpusSpec:
    local_files: tuple[str, ...]
    read: Callable[[Path], list[str]]
    hub_args: tuple[Any, ...]
    hub_kwargs: dict[str, Any]
    hub_field: str
    max_windows: int | None = None


CORPORA: dict[str, _CorpusSpec] = {
    "wikitext2": _CorpusSpec(
        ("wikitext2/wikitext2_test_hf_rows.json", "wikitext2/wiki.test.raw"),
        _read_wikitext_rows,
        ("wikitext", "wikitext-2-raw-v1"),
        {"split": "test"},
        "text",
    ),
    "ptb": _CorpusSpec(
        ("ptb/ptb.test.txt",), _read_ptb_sentences, ("ptb_text_only", "penn_treebank"), {"split": "test"}, "sentence"
    ),
    "c4": _CorpusSpec(
        ("c4/c4_validation_2k.jsonl",),
        _read_c4_documents,
        ("allenai/c4",),
        {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"}, "split": "validation"},
        "text",
        max_windows=C4_NUM_WINDOWS,
    ),
}

DEFAULT_JOIN = {"wikitext2": "\n\n", "ptb": PTB_JOIN["sparsegpt"], "c4": " "}


def _rows_from_hub(spec: _CorpusSpec) -> list[str]:
    import datasets

    rows = list(datasets.load_dataset(*spec.hub_args, **spec.hub_kwargs)[spec.hub_field])
    if spec.read is _read_c4_documents:
        rows = rows[:C4_NUM_DOCUMENTS]
    if spec.read is _read_ptb_sentences:
        rows = [r.strip() for r in rows if r.strip()]
    return rows


def load_perplexity_text(
    name: str,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    source: str = "auto",
    join: str | None = None,
) -> PerplexityText:
    """Builds the evaluation string of a standard corpus.

    Args:
        name: ``"wikitext2"``, ``"ptb"`` or ``"c4"``.
        path: A file to read instead of the default one (same format: HF rows JSON or raw text for WikiText-2, text
            lines for PTB, jsonl with ``text`` for C4). Use ``ptb/ptb.valid.txt`` for LLM-Pruner's PTB split.
        data_dir: Data directory holding the default files (default: :func:`optimum_depth.data.default_data_dir`);
            every documented file name of the corpus is tried (WikiText-2: the HF rows JSON, then ``wiki.test.raw``).
        source: ``"local"`` (files only), ``"hub"`` (``datasets.load_dataset``) or ``"auto"`` (local file when it
            exists, else the Hub).
        join: String joining the rows (default: :data:`DEFAULT_JOIN`; ``"\\n\\n"`` for PTB reproduces Shortened
            LLaMA/LLM-Pruner).

    Returns:
        The :class:`PerplexityText`.

    Raises:
        ConfigError: If the corpus name or ``source`` is unknown.
        DataError: If the file is malformed or holds no text.
        DataNotFoundError: If no local file exists (every path tried is named) and the Hub is not used or not
            reachable.
    """
    if name not in CORPORA:
        raise ConfigError(f"Unknown perplexity corpus {name!r}; expected one of {sorted(CORPORA)}.")
    if source not in ("auto", "local", "hub"):
        raise ConfigError(f"`source` must be 'auto', 'local' or 'hub', got {source!r}.")
    if path is not None and source == "hub":
        raise ConfigError("Pass either `path=` (a local file) or source='hub', not both.")
    spec = CORPORA[name]
    join = DEFAULT_JOIN[name] if join is None else join
    if path is not None and not Path(path).is_file():
        raise DataNotFoundError(f"Perplexity data file {os.fspath(path)!r} does not exist.")
    tried: list[Path] = []
    if path is not None:
        tried = [Path(path)]
    elif source != "hub":
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        tried = [root / relative for relative in spec.local_files] if root is not None else []
    file = next((f for f in tried if f.is_file() and f.stat().st_size > 0), None)

    if file is not None:
        rows = spec.read(file)
        provenance: dict[str, Any] = {"file": data_identity(file)}  # name, hash and size, not the local path
    elif source == "local" or (source == "auto" and not hub_reachable()):
        looked = ", ".join(repr(str(f)) for f in tried) or f"{spec.local_files} (no data folder found)"
        raise DataNotFoundError(
            f"No local {name} data: tried {looked} (missing or empty), and "
            f"{'source is local' if source == 'local' else 'the Hub is not reachable'}. Pass `path=` or "
            "`data_dir=` (--data-dir), or set $OPTIMUM_DEPTH_DATA_DIR."
        )
    else:
        logger.info("Loading %s from the Hub (%s).", name, spec.hub_args)
        rows = _rows_from_hub(spec)
        provenance = {"hub": list(spec.hub_args), **{k: v for k, v in spec.hub_kwargs.items()}}
    if not any(r.strip() for r in rows):
        raise DataError(f"The {name} data ({provenance}) holds no text.")
    provenance.update({"rows": len(rows), "join": join})
    return PerplexityText(name=name, text=join.join(rows), source=provenance, max_windows=spec.max_windows)
