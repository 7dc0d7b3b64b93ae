"""``CompensationConfig``: how the removed blocks are compensated (maps folded into the kept weights, reconstruction).

A peft-style dataclass validated in ``__post_init__``; :class:`~optimum_depth.config.DepthPruningConfig` holds one as its
``compensation``. A leaf module: it imports nothing that could import it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .errors import ConfigError
from .field_checks import check_positive_int, is_finite_number
from .persistence import JsonRecord

__all__ = ["COMPENSATION_METHODS", "COMPENSATION_SELECTIONS", "RECONSTRUCTION_LOSSES", "CompensationConfig"]

COMPENSATION_METHODS = ("linear_ls", "linear_cosine", "reconstruct")
COMPENSATION_SELECTIONS = ("criterion", "aware")
RECONSTRUCTION_LOSSES = ("final_norm_cosine", "token_mse", "mse")


@dataclass
class CompensationConfig(JsonRecord):
    """Compensation of removed blocks: one linear map per cut folded into the kept weights, optionally followed by a
    short reconstruction training of the kept block before each cut.

    For each run of removed blocks, a map ``T`` on the MLP output of the kept block before the run is fitted on
    calibration text so that the pruned model's hidden state after the run approximates the dense model's (ReplaceMe,
    Shopkhoev et al., 2025), then folded into that block's MLP down-projection (Gemma 2/3, whose MLP is followed by
    a norm: a diagonal map folded into that norm's gain): no module is added and the checkpoint stays a plain native
    model. ``method="reconstruct"`` then trains the kept block(s) before each cut to reproduce the dense hidden state
    after the cut, on the same cached calibration activations (still no new module). See ``docs/compensation.md``.

    Args:
        method: ``"linear_ls"`` (ridge least squares, shrunk towards the identity; the default),
            ``"linear_cosine"`` (ReplaceMe's cosine-distance variant, Adam on the rows; needs the rows in memory) or
            ``"reconstruct"`` (``linear_ls``, then reconstruction training of the kept blocks next to each cut).
        num_samples: Calibration sequences. Least squares over-fits on a few thousand tokens (10 x 128 makes
            perplexity *worse* than no compensation); a few hundred sequences of 128 tokens are needed.
        seq_len: Tokens per calibration sequence.
        ridge: A fixed ridge, relative to the mean eigenvalue of ``MᵀM``; ``None`` chooses it among a grid on
            held-out calibration sequences (the map is then refitted on all of them).
        heldout_fraction: Fraction of the calibration sequences held out to choose the ridge and report the fit.
        seed: Seed of the calibration sampling (distinct from the scoring calibration's by default).
        batch_size: Sequences per block call while fitting.
        selection: ``"criterion"`` (the criterion chooses the blocks, the maps are fitted after; the default) or
            ``"aware"`` (with ``criterion="sleb"``: every greedy candidate is scored after its own fitted map, see
            :mod:`optimum_depth.compensation.selection`).
        selection_samples: Calibration sequences the aware selection uses (its memory grows with them); the last
            ``heldout_fraction`` of them choose each map's ridge and score the candidates.
        selection_candidates: After the first round, the aware selection rescores only this many blocks (the best
            of their latest scores) plus the blocks next to a cut, as lazy greedy does; ``0`` rescores every block.
        reconstruct_steps: ``reconstruct``: Adam steps in all, shared by the cuts in proportion to their removed
            blocks (each step: ``batch_size`` calibration sequences through the trained blocks, forward + backward).
        reconstruct_max_seconds: ``reconstruct``: stop training once this many CPU-seconds (process time) have been
            spent on it, whatever the steps (``None``: the steps alone bound it).
        reconstruct_lr: ``reconstruct``: peak Adam learning rate *relative to each weight tensor's RMS* (Adafactor's
            relative step size: weights of different scales move by the same fraction), with a cosine decay to zero
            over the steps.
        reconstruct_loss: ``reconstruct``: ``"final_norm_cosine"`` (1 - cosine between the model's final norm of
            output and target; the default), ``"token_mse"`` (squared error relative to each target token's squared
            norm) or ``"mse"`` (squared error relative to the targets' mean squared norm).
        reconstruct_blocks: ``reconstruct``: kept blocks trained per cut: the one before it, and the ones before
            that (never across an earlier cut).
    """

    method: str = field(default="linear_ls", metadata={"help": f"One of {COMPENSATION_METHODS}."})
    num_samples: int = field(default=256, metadata={"help": "Calibration sequences for the fit."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per calibration sequence."})
    ridge: float | None = field(default=None, metadata={"help": "Fixed relative ridge; None: chosen held-out."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Sequences held out to choose the ridge."})
    seed: int = field(default=1, metadata={"help": "Seed of the calibration sampling."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per block call."})
    selection: str = field(default="criterion", metadata={"help": f"One of {COMPENSATION_SELECTIONS}."})
    selection_samples: int = field(default=64, metadata={"help": "Sequences used by the aware selection."})
    selection_candidates: int = field(default=10, metadata={"help": "Blocks rescored per later round (0: all)."})
    reconstruct_steps: int = field(default=400, metadata={"help": "reconstruct: Adam steps in all."})
    reconstruct_max_seconds: float | None = field(
        default=None, metadata={"help": "reconstruct: CPU-seconds cap on the training (None: steps only)."}
    )
    reconstruct_lr: float = field(
        default=1e-2, metadata={"help": "reconstruct: peak learning rate, relative to each weight tensor's RMS."}
    )
    reconstruct_loss: str = field(default="final_norm_cosine", metadata={"help": f"One of {RECONSTRUCTION_LOSSES}."})
    reconstruct_blocks: int = field(default=1, metadata={"help": "reconstruct: kept blocks trained per cut."})

    file_name: ClassVar[str] = "compensation_config.json"
    required_keys: ClassVar[tuple[str, ...]] = ("method",)

    def __post_init__(self) -> None:
        if self.method not in COMPENSATION_METHODS:
            raise ConfigError(f"`compensation` method must be one of {COMPENSATION_METHODS}, got {self.method!r}.")
        if self.selection not in COMPENSATION_SELECTIONS:
            raise ConfigError(
                f"`compensation` selection must be one of {COMPENSATION_SELECTIONS}, got {self.selection!r}."
            )
        for name in ("num_samples", "seq_len", "batch_size", "selection_samples"):
            check_positive_int(f"compensation {name}", getattr(self, name))
        if self.selection_samples < 2:
            raise ConfigError("The aware selection needs at least 2 calibration sequences (one scores).")
        check_positive_int("selection_candidates", self.selection_candidates, allow_zero=True)
        if self.num_samples < 2:
            raise ConfigError("Compensation needs at least 2 calibration sequences (one is held out).")
        if self.ridge is not None and not (is_finite_number(self.ridge) and self.ridge >= 0):
            raise ConfigError(f"`compensation` ridge must be a number >= 0 or None, got {self.ridge!r}.")
        if not (is_finite_number(self.heldout_fraction) and 0 < self.heldout_fraction < 1):
            raise ConfigError(f"`heldout_fraction` must be in (0, 1), got {self.heldout_fraction!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"`compensation` seed must be an integer, got {self.seed!r}.")
        self._validate_reconstruction()

    def _validate_reconstruction(self) -> None:
        for name in ("reconstruct_steps", "reconstruct_blocks"):
            check_positive_int(f"compensation {name}", getattr(self, name))
        if not (is_finite_number(self.reconstruct_lr) and self.reconstruct_lr > 0):
            raise ConfigError(f"`reconstruct_lr` must be a finite number > 0, got {self.reconstruct_lr!r}.")
        seconds = self.reconstruct_max_seconds
        if seconds is not None and not (is_finite_number(seconds) and seconds > 0):
            raise ConfigError(f"`reconstruct_max_seconds` must be a number > 0 or None, got {seconds!r}.")
        if self.reconstruct_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigError(
                f"`reconstruct_loss` must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruct_loss!r}."
            )

    @property
    def map_method(self) -> str:
        """The linear maps fitted first: ``method`` itself, or ``"linear_ls"`` before a reconstruction."""
        return "linear_ls" if self.method == "reconstruct" else self.method

    @property
    def reconstructs(self) -> bool:
        """Whether the kept blocks next to each cut are trained after the maps are folded."""
        return self.method == "reconstruct"

    @property
    def heldout_samples(self) -> int:
        """Sequences held out (at least one, at most all but one)."""
        return min(self.num_samples - 1, max(1, round(self.heldout_fraction * self.num_samples)))
