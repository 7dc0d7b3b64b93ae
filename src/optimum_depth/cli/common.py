"""Options shared by subcommands: the model, the pruning config, calibration, and the output folder."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..config import (
    AUTO_CANDIDATES,
    COMPENSATION_METHODS,
    COMPENSATION_SELECTIONS,
    CRITERIA_BY_GRANULARITY,
    DEFAULT_SEQ_LEN,
    DISTANCES,
    GRANULARITIES,
    PLUS_PROTECT_FIRST,
    PLUS_PROTECT_LAST,
    PLUS_PROTECTED_CRITERIA,
    CompensationConfig,
    DepthPruningConfig,
)
from ..errors import DataNotFoundError, UsageError

logger = logging.getLogger(__name__)

BLOCK_CRITERIA = CRITERIA_BY_GRANULARITY["block"]
RECOMMENDED_BLOCK_CRITERION = "auto"
"""The default block criterion of ``prune``, ``score`` and ``quickstart``: ``auto`` tries the block criteria (with the
run's compensation) and keeps the plan that is best on held-out calibration text, since no criterion is best on every
model (``docs/criteria.md``)."""
FALLBACK_BLOCK_CRITERION = "block_influence"
"""The default criterion when there is no calibration text (``--calibration self``): ``auto`` would first have the model
generate its fit and held-out sequences; Block Influence, the best plain criterion on SmolLM2's validation text, needs
only 10."""
RECOMMENDED_COMPENSATION = "reconstruct"
"""The default compensation of ``prune``, ``score`` (for ``auto``'s comparison) and ``quickstart`` for block plans when
calibration text is available: least-squares maps, then a short reconstruction training of the kept block before
each cut (``docs/compensation.md``), within minutes on a CPU."""
SUBLAYER_CRITERION = CRITERIA_BY_GRANULARITY["sublayer"][0]
"""The criterion of ``--granularity sublayer`` when none is given (FinerCut)."""
DEFAULT_PRUNING_RATIO = 0.25
"""The target when neither the options nor ``--config`` give one."""
ALL_CRITERIA = tuple(c for names in CRITERIA_BY_GRANULARITY.values() for c in names)
_PLUS = "/".join(PLUS_PROTECTED_CRITERIA)
_DEFAULTS = DepthPruningConfig.__dataclass_fields__
_COMPENSATION_DEFAULTS = CompensationConfig()

# CLI option -> (DepthPruningConfig field, type, help). Options left unset keep the config (or file) value.
CONFIG_OPTIONS: dict[str, tuple[type, str]] = {
    "pruning_ratio": (
        float,
        f"Fraction of the candidates (blocks, or sublayers) to remove, in (0, 1) (default {DEFAULT_PRUNING_RATIO}).",
    ),
    "num_layers_to_remove": (int, "Number of candidates to remove (instead of --pruning-ratio)."),
    "target_num_params": (int, "Remove candidates until at most this many parameters remain."),
    "protect_first": (int, f"Leading blocks never removed (default: {PLUS_PROTECT_FIRST} for {_PLUS}, else 0)."),
    "protect_last": (int, f"Trailing blocks never removed (default: {PLUS_PROTECT_LAST} for {_PLUS}, else 0)."),
    "protect_first_fraction": (float, "Fraction of leading blocks never removed (FinerCut's -x)."),
    "num_samples": (int, f"Calibration sequences (default {_DEFAULTS['num_samples'].default})."),
    "seq_len": (
        int,
        f"Tokens per calibration sequence (default {DEFAULT_SEQ_LEN['block']} for blocks, "
        f"{DEFAULT_SEQ_LEN['sublayer']} for sublayers).",
    ),
    "seed": (int, f"Seed of the calibration sampling (default {_DEFAULTS['seed'].default})."),
    "batch_size": (int, f"Calibration sequences per forward pass (default {_DEFAULTS['batch_size'].default})."),
    "auto_max_seconds": (
        float,
        f"--criterion auto: CPU-seconds its candidates may cost in all, cheapest first (default "
        f"{_DEFAULTS['auto_max_seconds'].default:g}).",
    ),
}


COMPENSATION_OPTIONS = {
    "compensation_samples": "num_samples",
    "compensation_selection": "selection",
    "reconstruct_steps": "reconstruct_steps",
    "reconstruct_max_seconds": "reconstruct_max_seconds",
}
"""CLI option -> :class:`CompensationConfig` field (each needs a compensation; ``reconstruct_*`` need reconstruct)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` (a local checkpoint, a Hub id or a ``.gguf`` file; default SmolLM2-135M-Instruct) and ``--dtype``."""
    parser.add_argument(
        "--model",
        default=None,
        help="Local checkpoint directory, Hub id, or .gguf file (default: SmolLM2-135M-Instruct).",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype the weights are loaded in (default: float32).",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--output-dir`` and ``--overwrite``."""
    parser.add_argument(
        "--output-dir",
        required=True,
        help="Folder receiving every output. Written through a staging folder: a failure leaves it unchanged.",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into a non-empty --output-dir: the command's own files are replaced, other files are kept.",
    )


def add_pruning_arguments(parser: argparse.ArgumentParser) -> None:
    """Options mapping onto :class:`DepthPruningConfig` (``--config`` loads a saved JSON first)."""
    group = parser.add_argument_group("pruning config (each option overrides --config)")
    group.add_argument("--config", help="A saved DepthPruningConfig JSON (the file, or its folder).")
    group.add_argument(
        "--criterion",
        choices=ALL_CRITERIA,
        help=f"Importance criterion. Blocks: {', '.join(BLOCK_CRITERIA)} (default {RECOMMENDED_BLOCK_CRITERION}: tries "
        f"the others and keeps the plan best on held-out calibration text; {FALLBACK_BLOCK_CRITERION} when the "
        f"calibration is 'self'); sublayers: {SUBLAYER_CRITERION} (the default with --granularity sublayer).",
    )
    group.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        help=f"Remove whole blocks (default) or attention/MLP sublayers (criterion {SUBLAYER_CRITERION}).",
    )
    group.add_argument(
        "--distance", choices=DISTANCES, help=f"FinerCut's output distance (default {_DEFAULTS['distance'].default})."
    )
    group.add_argument(
        "--compensation",
        choices=("none", *COMPENSATION_METHODS),
        help="Compensation folded into the kept weights (blocks only): linear_ls (least squares, ridge chosen on "
        "held-out text; a diagonal map into the post-MLP norm on Gemma 2/3), linear_cosine, or reconstruct (linear_ls, "
        "then the kept block before each cut trained to reproduce the dense state after it). Default: "
        f"{RECOMMENDED_COMPENSATION} for blocks when calibration text is available (not 'self') and no --config is "
        "given, else none.",
    )
    group.add_argument(
        "--compensation-samples",
        type=positive_int,
        default=None,
        help=f"Calibration sequences of {_COMPENSATION_DEFAULTS.seq_len} tokens for the compensation fit (default "
        f"{_COMPENSATION_DEFAULTS.num_samples}; least squares needs a few hundred).",
    )
    group.add_argument(
        "--compensation-selection",
        choices=COMPENSATION_SELECTIONS,
        default=None,
        help=f"criterion: the criterion chooses the blocks, then they are compensated; aware (with --criterion sleb): "
        f"every greedy candidate is scored after its own fitted map (default {_COMPENSATION_DEFAULTS.selection}).",
    )
    group.add_argument(
        "--reconstruct-steps",
        type=positive_int,
        default=None,
        help="--compensation reconstruct: Adam steps in all, shared by the cuts (default "
        f"{_COMPENSATION_DEFAULTS.reconstruct_steps}).",
    )
    group.add_argument(
        "--reconstruct-max-seconds",
        type=positive_float,
        default=None,
        help="--compensation reconstruct: stop the training after this many CPU-seconds (default: the steps only).",
    )
    for option, (kind, text) in CONFIG_OPTIONS.items():
        group.add_argument(f"--{option.replace('_', '-')}", dest=option, type=kind, default=None, help=text)
    group.add_argument(
        "--auto-candidates",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=None,
        help=f"--criterion auto: comma-separated candidates among {', '.join(AUTO_CANDIDATES)} (default: all, within "
        "--auto-max-seconds).",
    )
    group.add_argument(
        "--protected-layers",
        type=lambda s: [int(i) for i in s.split(",") if i.strip()],
        default=None,
        help="Comma-separated original block indices never removed, e.g. 0,1,29.",
    )
    group.add_argument(
        "--calibration",
        default=None,
        help="Calibration text file/folder, or 'self' for text generated by the model (default: the local "
        "shared data's calib/ folder when present, else 'self').",
    )


def config_from_args(
    args: argparse.Namespace, default_criterion: str = RECOMMENDED_BLOCK_CRITERION
) -> DepthPruningConfig:
    """Builds the pruning config from ``--config`` and the individual options (options win).

    Args:
        args: Parsed arguments.
        default_criterion: Criterion when neither ``--config`` nor ``--criterion`` gives one.

    Returns:
        The validated config.
    """
    data: dict[str, Any] = DepthPruningConfig.from_pretrained(args.config).to_dict() if args.config else {}
    explicit = {name: getattr(args, name) for name in ("criterion", "granularity", "distance", *CONFIG_OPTIONS)}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if args.protected_layers is not None:
        explicit["protected_layers"] = args.protected_layers
    if args.auto_candidates is not None:
        explicit["auto_candidates"] = args.auto_candidates
    targets = ("pruning_ratio", "num_layers_to_remove", "target_num_params")
    if any(t in explicit for t in targets):
        data = {k: v for k, v in data.items() if k not in targets}
    data.update(explicit)
    if not any(data.get(t) is not None for t in targets):
        data["pruning_ratio"] = DEFAULT_PRUNING_RATIO
    if "criterion" not in data:
        data["criterion"] = SUBLAYER_CRITERION if data.get("granularity") == "sublayer" else default_criterion
    if args.calibration is not None:
        data["calibration_dataset"] = args.calibration
    if args.compensation is not None:
        data["compensation"] = None if args.compensation == "none" else {"method": args.compensation}
    for option, key in COMPENSATION_OPTIONS.items():
        if getattr(args, option) is None:
            continue
        if not data.get("compensation"):
            raise UsageError(f"--{option.replace('_', '-')} needs --compensation ({', '.join(COMPENSATION_METHODS)}).")
        if option.startswith("reconstruct") and data["compensation"].get("method") != "reconstruct":
            raise UsageError(f"--{option.replace('_', '-')} needs --compensation reconstruct.")
        data["compensation"] = {**dict(data["compensation"]), key: getattr(args, option)}
    known = {f.name for f in fields(DepthPruningConfig)}
    return DepthPruningConfig(**{k: v for k, v in data.items() if k in known})


def with_recommended_recipe(
    config: DepthPruningConfig, args: argparse.Namespace, calibration: Any
) -> DepthPruningConfig:
    """``config`` with the recommended compensation when the user chose none and it can be fitted, and the default
    criterion adapted to the calibration.

    The compensation applies to block plans whose compensation was left unset (neither ``--compensation`` nor
    ``--config``) and whose calibration is text: the fit needs a few hundred sequences, which generating (``"self"``)
    would take out of minutes, so it is skipped then, with a warning. For the same reason a criterion left at its
    default (``auto``) becomes :data:`FALLBACK_BLOCK_CRITERION` with ``"self"`` calibration.

    Args:
        config: The config built from the options.
        args: The parsed options (``criterion``, ``compensation`` and, when the command has it, ``config``).
        calibration: The calibration source the command will use.

    Returns:
        The config to prune with.
    """
    from_file = getattr(args, "config", None)
    self_generated = isinstance(calibration, str) and calibration == "self"
    if self_generated and not from_file and args.criterion is None and config.criterion == RECOMMENDED_BLOCK_CRITERION:
        logger.warning(
            "No calibration text: criterion %s instead of the default %s (--criterion %s forces it).",
            FALLBACK_BLOCK_CRITERION,
            RECOMMENDED_BLOCK_CRITERION,
            RECOMMENDED_BLOCK_CRITERION,
        )
        config = replace(config, criterion=FALLBACK_BLOCK_CRITERION)
    if args.compensation is not None or from_file or config.granularity != "block" or config.compensation is not None:
        return config
    if self_generated:
        logger.warning(
            "No calibration text: skipping the default %s compensation (--compensation %s forces it).",
            RECOMMENDED_COMPENSATION,
            RECOMMENDED_COMPENSATION,
        )
        return config
    return replace(config, compensation=CompensationConfig(method=RECOMMENDED_COMPENSATION))


def recipe_label(plan: Any, config: DepthPruningConfig) -> str:
    """``"<criterion> + <method> compensation"`` for messages; ``auto`` shows its choice (``"auto: sleb ..."``)."""
    criterion = str(plan.criterion)
    choice = (plan.reason or {}).get("auto") or {}
    if choice.get("chosen"):
        criterion = f"{criterion}: {choice['chosen']}"
    return criterion if config.compensation is None else f"{criterion} + {config.compensation.method} compensation"


def default_calibration_source() -> str:
    """The local shared ``calib/`` folder when present, else ``"self"`` (samples generated by the model)."""
    from ..data import default_data_dir

    data_dir = default_data_dir()
    if data_dir is not None and (data_dir / "calib").is_dir():
        return str(data_dir / "calib")
    return "self"


def config_calibration(config: DepthPruningConfig) -> str | None:
    """The calibration source of a config, or the default one when the config needs one and names none."""
    if config.calibration_dataset is not None:
        return config.calibration_dataset
    return default_calibration_source() if config.compensation is not None else None


def load_model(args: argparse.Namespace, name_or_path: str | None = None):
    """Loads ``(model, tokenizer)`` from ``--model`` (or ``name_or_path``), refusing incomplete checkpoints."""
    import torch

    from ..loading.zoo import load_model_and_tokenizer

    name = args.model if name_or_path is None else name_or_path
    if name is not None and name.endswith(".gguf") and not Path(name).expanduser().is_file():
        raise DataNotFoundError(f"Model {name!r} does not exist.")
    return load_model_and_tokenizer(name, dtype=getattr(torch, args.dtype))


def check_output_dir(args: argparse.Namespace) -> Path:
    """Refuses a non-empty output folder unless ``--overwrite``, a file, and a place that cannot be written.

    Checked before any work; ``~`` is expanded (``args.output_dir`` is updated).
    """
    from ..publishing.saving import check_writable

    path = Path(args.output_dir).expanduser()
    args.output_dir = str(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-dir {str(path)!r} is a file.")
    if path.is_dir() and any(path.iterdir()) and not args.overwrite:
        raise UsageError(f"--output-dir {str(path)!r} is not empty; pass --overwrite to write into it.")
    check_writable(path)
    return path


def check_data_dir(data_dir: str | None) -> Path | None:
    """The ``--data-dir`` folder, checked to exist, or the default local data folder."""
    from ..data import default_data_dir

    if data_dir is None:
        return default_data_dir()
    if not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir!r} is not a directory.")
    return Path(data_dir)
