"""Sublayer granularity (FinerCut): attention and MLP sublayers as pruning candidates.

The same module names as :mod:`optimum_depth.blocks`: :mod:`.engine` (cached sublayer-wise forwards),
:mod:`.scoring`, :mod:`.planning`, :mod:`.surgery` (removing sublayers, converting to the pruned model classes in
place); plus :mod:`.candidates` (the sublayers of a model), :mod:`.search` (FinerCut's greedy and one-shot searches)
and :mod:`.plot` (the map of what was removed).

This ``__init__`` imports nothing (the criteria build on the engine, and the scoring on the criteria); import
the submodules, or use the top-level API.
"""
