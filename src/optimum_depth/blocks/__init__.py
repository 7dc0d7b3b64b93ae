"""Block granularity: the cached block-wise engine, planning and surgery of whole decoder blocks.

The same module names as :mod:`optimum_depth.sublayers`, so one can be read against the other:
:mod:`.engine` (forward passes over calibration data with cached block inputs), :mod:`.planning` (target checks and
the plan), :mod:`.surgery` (removing blocks in place); plus :mod:`.replay` (running blocks one by one on captured
inputs, which compensation and sparsity use too).

Nothing here imports the criteria: they run on the engine, and the scoring that runs them
(:func:`optimum_depth.criteria.scoring.score_blocks`) sits above both. This ``__init__`` imports nothing; import the
submodules, or use the top-level API.
"""
