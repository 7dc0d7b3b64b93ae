"""Every file name optimum_depth writes or reads, in one place (a leaf module: it imports nothing)."""

from __future__ import annotations

# Records written beside a pruned checkpoint (and read back by the CLI, cards and the Hub upload).
CONFIG_NAME = "depth_pruning_config.json"
"""A saved :class:`~optimum_depth.DepthPruningConfig`."""
PLAN_NAME = "pruning_plan.json"
"""A saved :class:`~optimum_depth.PruningPlan`."""
SCORES_NAME = "layer_scores.json"
"""Saved :class:`~optimum_depth.LayerScores`."""
PLOT_NAME = "layer_scores.png"
"""The importance plot of the scores."""
RESULTS_NAME = "evaluation_results.json"
"""Saved evaluation results (:class:`~optimum_depth.evaluation.EvaluationResults` or ``ComparisonResults``)."""
RESULTS_MARKDOWN_NAME = "evaluation_results.md"
"""The same results as markdown tables."""
SPARSITY_CONFIG_NAME = "sparsity_config.json"
"""A saved :class:`~optimum_depth.sparsity.SparsityConfig`."""
SPARSITY_RESULT_NAME = "sparsity_result.json"
"""The report of a :func:`~optimum_depth.sparsity.sparsify` run (per-block and per-layer sparsities)."""
RECOVERY_CONFIG_NAME = "recovery_config.json"
"""A saved :class:`~optimum_depth.training.RecoveryConfig`."""
CARD_NAME = "README.md"
"""The model card."""
CARD_TEMPLATE_NAME = "model_card.md"
"""The packaged jinja template of the model card (``optimum_depth/templates/``)."""

# Files of a transformers checkpoint.
MODEL_CONFIG_NAME = "config.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
TRAINER_STATE_NAME = "trainer_state.json"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"

REMOTE_CODE_FILES = (
    "configuration_pruned.py",
    "modeling_pruned.py",
    "pruned_decoder.py",
    "pruned_layout.py",
    "transformers_compat.py",
)
"""Python files written beside sublayer-pruned checkpoints for ``trust_remote_code=True``."""

RECORD_FILES = (CONFIG_NAME, PLAN_NAME, SCORES_NAME, PLOT_NAME, RESULTS_NAME, RESULTS_MARKDOWN_NAME)
"""Records a save may write beside the weights. A new save into a folder removes the ones it does not rewrite, so
the folder never describes two different checkpoints."""

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
"""Weight file suffixes (only safetensors are ever written; a save never deletes a file for its suffix)."""
OWN_WEIGHT_PATTERN = r"model(-\d{5}-of-\d{5})?\.safetensors"
"""Names of the weight files ``save_pretrained`` writes (one file, or numbered shards); the only weight files a save
may remove from a folder without its manifest (with the index ``model.safetensors.index.json``)."""
MANIFEST_NAME = ".optimum-depth-manifest.json"
"""The hidden list of the files a save wrote into its folder (names, sizes, hashes; never a path). A later save
removes only files listed there and still unchanged: nothing else in the folder is ever deleted."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Pickled weight formats the library refuses to write."""
WEIGHT_INDEX_NAMES = (SAFETENSORS_INDEX_NAME, "pytorch_model.bin.index.json")
"""Index files of sharded weights."""

STAGING_MARKER = ".optimum-depth-staging-"
"""Part of the name of the hidden folder a save is staged in, beside its target: ``.<name>.optimum-depth-staging-<pid>-<random>``."""

DATA_DIR_ENV = "OPTIMUM_DEPTH_DATA_DIR"
"""Environment variable naming the local evaluation/calibration data folder."""
CACHE_DIR_ENV = "OPTIMUM_DEPTH_CACHE"
"""Environment variable naming the cache folder (converted GGUF models, teacher logits)."""
