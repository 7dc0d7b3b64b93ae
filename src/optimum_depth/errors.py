"""The errors optimum_depth raises for a user's mistake or bad input (a leaf module: it imports nothing).

Every one of them derives from :class:`OptimumDepthError` and is raised *before* anything is changed: the model, the
user's files and the output location are as they were. The command line turns exactly these into one line on stderr
and exit code 2; any other exception is a bug and shows its traceback (exit code 1). Each class also derives from
the built-in type code would have caught before (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "HubError",
    "LayerIndexError",
    "NonFiniteError",
    "OptimumDepthError",
    "OutputError",
    "PlanMismatchError",
    "ProvenanceError",
    "PruningTargetError",
    "SublayerIndexError",
    "UnsupportedArchitectureError",
    "UnsupportedParallelismError",
    "UsageError",
]


class OptimumDepthError(Exception):
    """Base of every error caused by what the user asked for or gave; nothing was changed when it is raised."""


class ConfigError(OptimumDepthError, ValueError):
    """An invalid setting (a config field, a function argument, a command-line option)."""


class UsageError(ConfigError):
    """A mistake in how a command was called (option combination, an existing output folder, ...)."""


class PruningTargetError(OptimumDepthError, ValueError):
    """The pruning target cannot be met with the candidates that may be removed."""


class UnsupportedArchitectureError(OptimumDepthError, ValueError):
    """The model's family is not (yet) supported, or the object is not a causal LM of a supported family."""


class LayerIndexError(OptimumDepthError, ValueError):
    """Block indices given for removal are invalid."""


class SublayerIndexError(OptimumDepthError, ValueError):
    """Sublayers given for removal are invalid."""


class PlanMismatchError(OptimumDepthError, ValueError):
    """A pruning plan (or scores) made for another model was given."""


class ProvenanceError(OptimumDepthError, ValueError):
    """A model's recorded provenance (``surviving_layers``, ``source_num_hidden_layers``, ...) is inconsistent."""


class CheckpointError(OptimumDepthError, ValueError):
    """A checkpoint is incomplete, corrupt or does not match its config (missing or unexpected weights, ...)."""


class DataError(OptimumDepthError, ValueError):
    """Input data (calibration, evaluation or training text, token ids, a record file) is malformed."""


class DataNotFoundError(OptimumDepthError, FileNotFoundError):
    """A file or folder the user named, or the local data a feature needs, does not exist."""


class OutputError(OptimumDepthError, OSError):
    """The output location cannot be written (permission denied, read-only filesystem, disk full); nothing changed."""


class NonFiniteError(OptimumDepthError, ValueError):
    """A weight, score, compensation map or activation is NaN or infinite; nothing was computed from it or written."""


class HubError(OptimumDepthError, RuntimeError):
    """The Hugging Face Hub (or the given endpoint) could not be reached or refused the request."""


class UnsupportedParallelismError(OptimumDepthError, RuntimeError):
    """The training set-up (FSDP, DeepSpeed, DDP options) cannot run what was asked; nothing was changed."""
