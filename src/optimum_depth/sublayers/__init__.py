"""Sublayer granularity (FinerCut): attention and MLP sublayers as pruning candidates.

The same module names as :mod:`optimum_depth.blocks`: :mod:`.engine` (cached sublayer-wise forwards),
:mod:`.planning`, :mod:`.surgery` (removing sublayers, converting to the pruned model classes in place); plus
:mod:`.candidates` (the sublayers of a model), :mod:`.search` (FinerCut's greedy and one-shot searches) and
:mod:`.plot` (the map of what was removed).

Nothing here imports the criteria: FinerCut runs on the engine and the searches, and the scoring that runs it
(:func:`optimum_depth.criteria.scoring.score_sublayers`) sits above both. This ``__init__`` imports nothing; import
the submodules, or use the top-level API.
"""
