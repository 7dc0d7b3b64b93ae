"""Pure algorithms the criteria and engines share, with no knowledge of models.

:mod:`.best_first` (the exact early exit over candidates whose cost is a sum of non-negative terms),
:mod:`.head_bounds` (cheap lower bounds of a causal LM's NLL from a few rows of its head) and
:mod:`.output_distances` (distances between two models' next-token distributions).
"""
