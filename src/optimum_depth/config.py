"""``DepthPruningConfig``: what to prune, how much, how to score it, and what to protect.

Its compensation settings (:class:`~optimum_depth.compensation_config.CompensationConfig`) live in their own module and
are re-exported here.

A peft-style dataclass: every field carries its help text, ``__post_init__`` validates what can be checked without a
model, and :meth:`optimum_depth.DepthPruner.check` validates the rest against a model before any work is done. This
module is a leaf of the package: it imports no other module that could import it back.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .compensation_config import (
    COMPENSATION_METHODS,
    COMPENSATION_SELECTIONS,
    RECONSTRUCTION_LOSSES,
    CompensationConfig,
)
from .constants import CONFIG_NAME
from .errors import ConfigError, PruningTargetError
from .field_checks import check_positive_int, is_finite_number
from .persistence import JsonRecord

logger = logging.getLogger(__name__)

__all__ = [
    "COMPENSATION_METHODS",
    "COMPENSATION_SELECTIONS",
    "AUTO_CANDIDATES",
    "CRITERIA_BY_GRANULARITY",
    "RECONSTRUCTION_LOSSES",
    "CompensationConfig",
    "DepthPruningConfig",
    "PruningTargetError",
]

GRANULARITIES = ("block", "sublayer")
CRITERIA_BY_GRANULARITY: dict[str, tuple[str, ...]] = {
    "block": ("magnitude", "taylor", "ppl", "block_influence", "angular", "sleb", "auto"),
    "sublayer": ("finercut",),
}
"""The criterion names of each granularity; :mod:`optimum_depth.criteria` registers one implementation for each."""
AUTO_CANDIDATES = ("magnitude", "block_influence", "angular", "window", "taylor", "ppl", "sleb", "aware")
"""What ``criterion="auto"`` may try: the block criteria, ``"window"`` (the run of consecutive blocks the compensation
repairs best) and ``"aware"`` (SLEB with compensation-aware selection)."""
SCHEDULES = ("one_shot", "iterative")
DISTANCES = ("js", "js_finercut", "kl", "angular", "norm")
SUBLAYER_SEARCHES = ("greedy", "one_shot")
# Calibration length when `seq_len` is left at 0: 128 tokens for blocks, FinerCut's 10 x 256 for sublayers.
DEFAULT_SEQ_LEN = {"block": 128, "sublayer": 256}
# Shortened LLaMA's "+" heuristic: the first four and the last two blocks are never pruned by Mag+/Taylor+.
PLUS_PROTECTED_CRITERIA = ("magnitude", "taylor")
PLUS_PROTECT_FIRST = 4
PLUS_PROTECT_LAST = 2


@functools.lru_cache(maxsize=64)
def warn_once(message: str | None) -> None:
    """Logs ``message`` as a warning the first time it comes up in this process (a target checked twice says it
    once); ``None`` is nothing to say."""
    if message is not None:
        logger.warning(message)


@dataclass
class DepthPruningConfig(JsonRecord):
    """Configuration of a depth-pruning run.

    Exactly one target is given: ``pruning_ratio``, ``num_layers_to_remove`` or ``target_num_params``. Unless set
    explicitly, ``protect_first``/``protect_last`` follow Shortened LLaMA's "+" heuristic (first 4, last 2 blocks) for
    the ``magnitude`` and ``taylor`` criteria and protect nothing for the others.

    Args:
        criterion: Name of the importance criterion (see :data:`CRITERIA_BY_GRANULARITY`).
        granularity: ``"block"`` removes whole decoder blocks; ``"sublayer"`` removes attention/MLP sublayers.
        pruning_ratio: Fraction of candidates (blocks, or sublayers) to remove, in (0, 1).
        num_layers_to_remove: Number of candidates to remove.
        target_num_params: Remove candidates until the model has at most this many parameters.
        schedule: ``"one_shot"`` or ``"iterative"`` (used by ``DepthPruningCallback``).
        layers_per_step: Iterative schedule: candidates removed at each pruning event.
        prune_every_n_steps: Iterative schedule: optimizer steps between pruning events.
        prune_at_steps: Iterative schedule: explicit optimizer steps of the pruning events.
        protect_first: Number of leading blocks never removed (``None``: criterion default).
        protect_last: Number of trailing blocks never removed (``None``: criterion default).
        protect_first_fraction: Fraction of leading blocks never removed (FinerCut's ``-x``); combined with the above.
        protected_layers: Explicit block indices (original numbering) never removed.
        num_samples: Number of calibration sequences.
        seq_len: Tokens per calibration sequence; 0 (default) means 128 for blocks and 256 for sublayers (FinerCut).
        seed: Seed for calibration sampling and any randomness in scoring.
        calibration_dataset: Description of the calibration source (a path, ``"self"`` or a Hub dataset id).
        batch_size: Calibration sequences per forward pass during scoring.
        magnitude_p: Exponent ``p`` of the magnitude criterion (sum of ``|W|^p``).
        distance: Distance of the ``finercut`` criterion between dense and pruned next-token distributions.
        sublayer_search: ``finercut``: ``"greedy"`` (remove one sublayer at a time, re-scoring the rest with the
            earlier removals applied) or ``"one_shot"`` (rank every sublayer once by its removal alone).
        angular_last_token: Angular criterion: measure at the last token only (Gromov et al.) or average all tokens.
        early_exit: ``ppl``, ``sleb`` and ``finercut`` (greedy): evaluate the candidates best-first and stop each
            one as soon as its partial sum over the calibration batches proves it cannot be selected. The
            selection and its order are exactly those of a full evaluation; the values of the candidates cut short
            are lower bounds (listed in ``LayerScores.extra["lower_bound_candidates"]``). ``False`` evaluates every
            candidate on every batch (exact values for all, e.g. for a complete chart).
        compensation: Compensation of the removed blocks: ``None``, a method name of
            :data:`COMPENSATION_METHODS` or a :class:`CompensationConfig`.
        auto_candidates: ``criterion="auto"``: what it may try (:data:`AUTO_CANDIDATES`; ``None``: all of them).
            Each candidate's plan is compensated as the run will be (independent least-squares maps) and scored on
            held-out calibration sequences; the plan with the lowest loss is kept.
        auto_max_seconds: ``criterion="auto"``: CPU-seconds the candidates may cost in all (scoring and evaluation,
            estimated before each candidate runs from the measured cost of a block and of the LM head); candidates
            are tried cheapest first and the ones that would exceed what is left are skipped (and reported).
        auto_fit_samples: ``criterion="auto"``: calibration sequences shared by the candidates (the first
            ``num_samples`` of them score the criteria, all of them fit the candidates' maps).
        auto_heldout_samples: ``criterion="auto"``: further calibration sequences, never fitted on, on which the
            candidates' compensated models are compared.
    """

    criterion: str = field(default="magnitude", metadata={"help": "Importance criterion name."})
    granularity: str = field(default="block", metadata={"help": "'block' or 'sublayer'."})
    pruning_ratio: float | None = field(default=None, metadata={"help": "Fraction of candidates to remove."})
    num_layers_to_remove: int | None = field(default=None, metadata={"help": "Number of candidates to remove."})
    target_num_params: int | None = field(default=None, metadata={"help": "Parameter budget after pruning."})
    schedule: str = field(default="one_shot", metadata={"help": "'one_shot' or 'iterative'."})
    layers_per_step: int | None = field(default=None, metadata={"help": "Iterative: removed per event."})
    prune_every_n_steps: int | None = field(default=None, metadata={"help": "Iterative: steps between events."})
    prune_at_steps: list[int] | None = field(default=None, metadata={"help": "Iterative: explicit event steps."})
    protect_first: int | None = field(default=None, metadata={"help": "Leading blocks never removed."})
    protect_last: int | None = field(default=None, metadata={"help": "Trailing blocks never removed."})
    protect_first_fraction: float | None = field(default=None, metadata={"help": "Leading fraction protected."})
    protected_layers: list[int] = field(default_factory=list, metadata={"help": "Block indices never removed."})
    num_samples: int = field(default=10, metadata={"help": "Calibration sequences."})
    seq_len: int = field(default=0, metadata={"help": "Tokens per sequence (0: 128 for blocks, 256 for sublayers)."})
    seed: int = field(default=0, metadata={"help": "Seed for calibration and scoring."})
    calibration_dataset: str | None = field(default=None, metadata={"help": "Calibration source description."})
    batch_size: int = field(default=1, metadata={"help": "Sequences per scoring forward pass."})
    magnitude_p: float = field(default=1.0, metadata={"help": "Exponent of the magnitude criterion."})
    distance: str = field(default="js", metadata={"help": f"FinerCut distance, one of {DISTANCES}."})
    sublayer_search: str = field(default="greedy", metadata={"help": f"FinerCut search, one of {SUBLAYER_SEARCHES}."})
    angular_last_token: bool = field(default=True, metadata={"help": "Angular criterion at the last token."})
    early_exit: bool = field(default=True, metadata={"help": "PPL/SLEB/FinerCut: stop candidates that cannot win."})
    compensation: CompensationConfig | None = field(
        default=None, metadata={"help": f"Training-free compensation: None, {COMPENSATION_METHODS} or a config."}
    )
    auto_candidates: list[str] | None = field(
        default=None, metadata={"help": f"criterion='auto': candidates among {AUTO_CANDIDATES} (None: all)."}
    )
    auto_max_seconds: float = field(default=120.0, metadata={"help": "criterion='auto': CPU-seconds for candidates."})
    auto_fit_samples: int = field(default=64, metadata={"help": "criterion='auto': shared calibration sequences."})
    auto_heldout_samples: int = field(default=16, metadata={"help": "criterion='auto': held-out sequences."})

    file_name: ClassVar[str] = CONFIG_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("criterion",)

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"`granularity` must be one of {GRANULARITIES}, got {self.granularity!r}.")
        criteria = CRITERIA_BY_GRANULARITY[self.granularity]
        if self.criterion not in criteria:
            raise ConfigError(
                f"`criterion` {self.criterion!r} is not available for granularity {self.granularity!r}; "
                f"choose one of {sorted(criteria)}."
            )
        self._validate_target()
        self._validate_schedule()
        self._validate_protection()
        if self.seq_len == 0 and self.granularity in DEFAULT_SEQ_LEN:
            self.seq_len = DEFAULT_SEQ_LEN[self.granularity]
        for name in ("num_samples", "seq_len", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"`seed` must be an integer, got {self.seed!r}.")
        if self.sublayer_search not in SUBLAYER_SEARCHES:
            raise ConfigError(f"`sublayer_search` must be one of {SUBLAYER_SEARCHES}, got {self.sublayer_search!r}.")
        if self.distance not in DISTANCES:
            raise ConfigError(f"`distance` must be one of {DISTANCES}, got {self.distance!r}.")
        for name in ("angular_last_token", "early_exit"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if not (is_finite_number(self.magnitude_p) and self.magnitude_p > 0):
            raise ConfigError(f"`magnitude_p` must be a finite positive number, got {self.magnitude_p!r}.")
        self._validate_compensation()
        self._validate_auto()

    def _validate_auto(self) -> None:
        if self.auto_candidates is not None:
            self.auto_candidates = list(self.auto_candidates)
            unknown = [c for c in self.auto_candidates if c not in AUTO_CANDIDATES]
            if unknown or not self.auto_candidates or len(set(self.auto_candidates)) != len(self.auto_candidates):
                raise ConfigError(
                    f"`auto_candidates` must be a non-empty list of distinct names among {AUTO_CANDIDATES}, got "
                    f"{self.auto_candidates!r}."
                )
        if not (is_finite_number(self.auto_max_seconds) and self.auto_max_seconds >= 0):
            raise ConfigError(f"`auto_max_seconds` must be a number >= 0, got {self.auto_max_seconds!r}.")
        check_positive_int("auto_fit_samples", self.auto_fit_samples)
        check_positive_int("auto_heldout_samples", self.auto_heldout_samples)

    def _validate_compensation(self) -> None:
        if isinstance(self.compensation, str):
            self.compensation = CompensationConfig(method=self.compensation)
        elif isinstance(self.compensation, dict):
            self.compensation = CompensationConfig.from_dict(self.compensation)
        if self.compensation is not None and not isinstance(self.compensation, CompensationConfig):
            raise ConfigError(
                f"`compensation` must be None, one of {COMPENSATION_METHODS} or a CompensationConfig, got "
                f"{self.compensation!r}."
            )
        if self.compensation is not None and self.granularity != "block":
            raise ConfigError(
                "`compensation` applies to block pruning; sublayer (FinerCut) plans are not compensated."
            )
        if self.aware_selection and self.criterion not in ("sleb", "auto"):
            raise ConfigError(
                "Compensation-aware selection (`selection='aware'`) runs SLEB's greedy rounds: set criterion='sleb' "
                f"(got {self.criterion!r}), or selection='criterion' to compensate this criterion's plan."
            )

    @property
    def aware_selection(self) -> bool:
        """Whether the blocks are chosen with the compensation maps fitted (``compensation.selection == "aware"``)."""
        return self.compensation is not None and self.compensation.selection == "aware"

    def _validate_target(self) -> None:
        given = [
            n for n in ("pruning_ratio", "num_layers_to_remove", "target_num_params") if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ConfigError(
                "Give exactly one target among `pruning_ratio`, `num_layers_to_remove` and `target_num_params`; "
                f"got {given or 'none'}."
            )
        if self.pruning_ratio is not None:
            ratio = self.pruning_ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
                raise ConfigError(f"`pruning_ratio` must be in the open interval (0, 1), got {ratio!r}.")
        if self.num_layers_to_remove is not None:
            check_positive_int("num_layers_to_remove", self.num_layers_to_remove)
        if self.target_num_params is not None:
            check_positive_int("target_num_params", self.target_num_params)

    def _validate_schedule(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"`schedule` must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.layers_per_step is not None:
            check_positive_int("layers_per_step", self.layers_per_step)
        if self.prune_every_n_steps is not None:
            check_positive_int("prune_every_n_steps", self.prune_every_n_steps)
        if self.prune_at_steps is not None:
            steps = list(self.prune_at_steps)
            for step in steps:
                check_positive_int("prune_at_steps[]", step, allow_zero=True)
            if steps != sorted(set(steps)) or not steps:
                raise ConfigError(f"`prune_at_steps` must be a non-empty strictly increasing list, got {steps}.")
            self.prune_at_steps = steps
        if self.schedule == "iterative":
            if self.prune_at_steps is None and (self.layers_per_step is None or self.prune_every_n_steps is None):
                raise ConfigError(
                    "`schedule='iterative'` needs either `prune_at_steps` or both `layers_per_step` and "
                    "`prune_every_n_steps`."
                )
            if self.target_num_params is not None:
                raise ConfigError("`schedule='iterative'` takes `pruning_ratio` or `num_layers_to_remove`.")

    def _validate_protection(self) -> None:
        for name in ("protect_first", "protect_last"):
            value = getattr(self, name)
            if value is not None:
                check_positive_int(name, value, allow_zero=True)
        frac = self.protect_first_fraction
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1):
            raise ConfigError(f"`protect_first_fraction` must be in [0, 1), got {frac!r}.")
        self.protected_layers = list(self.protected_layers)
        for index in self.protected_layers:
            check_positive_int("protected_layers[]", index, allow_zero=True)
        if len(set(self.protected_layers)) != len(self.protected_layers):
            raise ConfigError(f"`protected_layers` has duplicates: {self.protected_layers}.")

    # ----------------------------------------------------------------------------------------------- resolution
    @property
    def resolved_protect_first(self) -> int:
        """``protect_first``, or the criterion's default (4 for Mag+/Taylor+, else 0)."""
        if self.protect_first is not None:
            return self.protect_first
        return PLUS_PROTECT_FIRST if self.criterion in PLUS_PROTECTED_CRITERIA else 0

    @property
    def resolved_protect_last(self) -> int:
        """``protect_last``, or the criterion's default (2 for Mag+/Taylor+, else 0)."""
        if self.protect_last is not None:
            return self.protect_last
        return PLUS_PROTECT_LAST if self.criterion in PLUS_PROTECTED_CRITERIA else 0

    def protected_blocks(self, num_blocks: int, original_indices: list[int] | None = None) -> list[int]:
        """Positions (in the current model) of the blocks that may not be removed.

        Args:
            num_blocks: Number of blocks of the current model.
            original_indices: Original index of each current block (``surviving_layers``); identity if ``None``.

        Returns:
            Sorted positions of protected blocks.

        Raises:
            PruningTargetError: If an explicitly protected index does not exist in the model.
        """
        original = list(range(num_blocks)) if original_indices is None else list(original_indices)
        first = self.resolved_protect_first
        if self.protect_first_fraction:
            first = max(first, math.floor(self.protect_first_fraction * num_blocks))
        protected = set(range(min(first, num_blocks)))
        protected |= set(range(max(0, num_blocks - self.resolved_protect_last), num_blocks))
        missing = [i for i in self.protected_layers if i not in original]
        if missing:
            raise PruningTargetError(
                f"`protected_layers` {missing} are not blocks of this model (its blocks have original indices "
                f"{original})."
            )
        protected |= {original.index(i) for i in self.protected_layers}
        return sorted(protected)

    def _fields_to_dict(self) -> dict[str, Any]:
        data = super()._fields_to_dict()
        data["compensation"] = self.compensation.to_dict() if self.compensation is not None else None
        return data

    def describe_target(self) -> dict[str, Any]:
        """The pruning target as a one-entry dict, e.g. ``{"pruning_ratio": 0.25}`` (recorded in plans)."""
        for name in ("pruning_ratio", "num_layers_to_remove", "target_num_params"):
            value = getattr(self, name)
            if value is not None:
                return {name: value}
        return {}

    def num_to_remove(self, num_candidates: int) -> int | None:
        """Number of candidates the target asks to remove, or ``None`` for a parameter-count target.

        Args:
            num_candidates: Number of blocks (or sublayers) of the model.

        Raises:
            PruningTargetError: If ``pruning_ratio`` of the candidates rounds to none (it is not rounded up to one:
                ``pruning_ratio=0.01`` of 5 blocks would silently remove 20%).
        """
        if self.num_layers_to_remove is not None:
            return self.num_layers_to_remove
        if self.pruning_ratio is not None:
            count = round(self.pruning_ratio * num_candidates)
            if count < 1:
                raise PruningTargetError(
                    f"pruning_ratio={self.pruning_ratio} of {num_candidates} candidates is "
                    f"{self.pruning_ratio * num_candidates:.2f} of them, which rounds to none. To remove one "
                    f"({100 / num_candidates:.0f}%), ask for it: num_layers_to_remove=1 (--num-layers-to-remove 1)."
                )
            return count
        return None

    def rounding_note(self, num_candidates: int, kind: str = "blocks") -> str | None:
        """A sentence when ``pruning_ratio`` rounds to a share more than 25% away from the one asked, else ``None``.

        Args:
            num_candidates: Number of blocks (or sublayers) of the model.
            kind: What the candidates are, for the sentence.
        """
        if self.pruning_ratio is None:
            return None
        count = self.num_to_remove(num_candidates) or 0
        achieved = count / num_candidates
        if abs(achieved - self.pruning_ratio) <= 0.25 * self.pruning_ratio:
            return None
        return (
            f"pruning_ratio={self.pruning_ratio} of {num_candidates} {kind} removes {count} of them "
            f"({100 * achieved:.0f}%, not {100 * self.pruning_ratio:.0f}%): whole {kind} only."
        )
