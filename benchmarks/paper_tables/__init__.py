"""Re-running the depth-pruning papers' comparisons on SmolLM2-135M-Instruct (issue #10).

* :mod:`.results_format`: the one-JSON-file-per-run results format, its validation and loading;
* :mod:`.tables`: which runs make up each paper table, and the markdown rendering ("not run" for missing runs);
* :mod:`.make_tables`: writes the tables into ``benchmarks/RESULTS.md`` from the results files;
* :mod:`.runner`: shared runner pieces (settings, evaluation, latency against the dense model, resumable run loop);
* :mod:`.table1_block_criteria`: table 1, the block criteria without retraining.

Run from the repository root, e.g. ``python -m benchmarks.paper_tables.table1_block_criteria``.
"""
