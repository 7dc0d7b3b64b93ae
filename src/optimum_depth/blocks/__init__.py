"""Block granularity: the cached block-wise engine, scoring, planning and surgery of whole decoder blocks.

The same module names as :mod:`optimum_depth.sublayers`, so one can be read against the other:
:mod:`.engine` (forward passes over calibration data with cached block inputs), :mod:`.scoring` (a criterion's
scores as :class:`~optimum_depth.LayerScores`), :mod:`.planning` (target checks and the plan), :mod:`.surgery`
(removing blocks in place).

This ``__init__`` imports nothing (the criteria build on the engine, and the scoring on the criteria); import
the submodules, or use the top-level API.
"""
