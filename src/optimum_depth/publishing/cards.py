"""Model cards of pruned checkpoints, generated with huggingface_hub's ``ModelCard`` from the packaged template.

The card states what was removed (from the provenance in the model's config, and the plan/scores when given), the
weight sparsity when the config records a sparsity run (:mod:`.card_sparsity`), the parameter counts, and the dense vs pruned measurements of :mod:`optimum_depth.evaluation` as tables and as
``model-index`` metadata the Hub renders (:mod:`.card_tables`). Values come only from those objects: a missing
section says "not measured". The template is ``optimum_depth/templates/model_card.md``; pass ``template_str`` to
use your own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils import validate_repo_id

from ..architectures import config_fingerprint, count_parameters, unwrap_model
from ..constants import (
    CARD_NAME,
    CARD_TEMPLATE_NAME,
    CONFIG_NAME,
    PLAN_NAME,
    PLOT_NAME,
    RESULTS_NAME,
    SCORES_NAME,
    SPARSITY_RESULT_NAME,
)
from ..errors import ConfigError, PlanMismatchError
from ..evaluation.markdown import NOT_MEASURED
from ..evaluation.results import ComparisonResults, EvaluationResults
from ..plan import PruningPlan
from ..privacy import find_local_model, is_hub_id
from ..provenance import original_layer_indices, source_num_layers
from ..scores import LayerScores
from ..version import __version__
from .card_sparsity import sparsity_card_section
from .card_tables import card_eval_results, format_settings, measured_sections, public_value, split_results

logger = logging.getLogger(__name__)

__all__ = [
    "CardOptions",
    "build_model_card",
    "default_template",
    "describe_file",
    "effective_plan",
    "inherited_license",
]


FILE_DESCRIPTIONS = {
    CARD_NAME: "this card",
    CONFIG_NAME: "the DepthPruningConfig that was run",
    "config.json": "model config, with the pruning provenance (`surviving_layers`, `pruning`)",
    "generation_config.json": "generation defaults of the base model",
    PLAN_NAME: "what was removed, in the original numbering, and why",
    SCORES_NAME: "importance of every candidate block/sublayer",
    RESULTS_NAME: "the measured results behind the tables above",
    PLOT_NAME: "the importance plot",
    SPARSITY_RESULT_NAME: "the weight sparsity run: sparsity and reconstruction error per block and layer",
}


def describe_file(name: str) -> str:
    """One-line description of a repository file for the card's file list."""
    if name in FILE_DESCRIPTIONS:
        return FILE_DESCRIPTIONS[name]
    if name.endswith(".safetensors") or name.endswith(".index.json"):
        return "weights (safetensors)"
    if name.startswith(("tokenizer", "special_tokens", "added_tokens", "vocab", "merges", "chat_template")):
        return "tokenizer"
    return "model file"


def default_template() -> str:
    """The packaged jinja template of the card (``optimum_depth/templates/model_card.md``)."""
    return (
        resources.files("optimum_depth").joinpath("templates").joinpath(CARD_TEMPLATE_NAME).read_text(encoding="utf-8")
    )


# -------------------------------------------------------------------------------------------------- what was removed
def effective_plan(config, plan: PruningPlan | None = None) -> PruningPlan | None:
    """The removal the config records, over every pruning step, in original numbering.

    Args:
        config: Config of a pruned model (``surviving_layers``, ``skipped_attention``/``skipped_mlp``, ``pruning``).
        plan: A plan the caller has; it must be part of what the config records.

    Returns:
        ``plan`` if given, else a plan rebuilt from the config, or ``None`` if the config records no pruning.

    Raises:
        PlanMismatchError: If ``plan`` removes something the model still has (a ``ValueError``).
    """
    original = original_layer_indices(config)
    total = source_num_layers(config)
    blocks = sorted(set(range(total)) - set(original))
    attention = sorted(original[i] for i in getattr(config, "skipped_attention", None) or [])
    mlp = sorted(original[i] for i in getattr(config, "skipped_mlp", None) or [])
    if plan is not None:
        still_there = [i for i in plan.removed_blocks if i not in blocks]
        still_there += [i for i in plan.removed_attention if i not in attention and i not in blocks]
        still_there += [i for i in plan.removed_mlp if i not in mlp and i not in blocks]
        if still_there:
            raise PlanMismatchError(
                f"The plan removes original blocks/sublayers {sorted(still_there)} that this model still has; "
                "it is not the plan of this model."
            )
        return plan
    if not (blocks or attention or mlp):
        return None
    event = getattr(config, "pruning", None) or {}
    return PruningPlan(
        granularity="sublayer" if attention or mlp else "block",
        removed_blocks=tuple(blocks),
        removed_attention=tuple(attention),
        removed_mlp=tuple(mlp),
        source_num_hidden_layers=total,
        source_fingerprint=config_fingerprint(config),
        criterion=event.get("criterion"),
        reason={"derived_from": "config.surviving_layers / skipped_attention / skipped_mlp"},
    )


def _pruning_steps(config) -> list[dict[str, Any]]:
    event = getattr(config, "pruning", None) or {}
    if not event:
        return []
    return [*event.get("history", []), {k: v for k, v in event.items() if k != "history"}]


def _compensation_lines(record: dict[str, Any] | None) -> list[str]:
    """Card lines for a training-free compensation record (``config.pruning["compensation"]``)."""
    if not record:
        return []
    calibration = record.get("calibration") or {}
    lines = [
        f"Compensation `{record.get('method')}` folded into the kept weights (no new module); calibration "
        f"{format_settings(calibration) if calibration else 'unknown'}"
    ]
    for fit in record.get("maps", []):
        lines.append(
            f"Compensation map for the cut of blocks {fit.get('removed')}: folded into block {fit.get('fold_block')}, ridge "
            f"{fit.get('relative_ridge')}, held-out relative error {fit.get('heldout_relative_error')}"
        )
    for cut in (record.get("reconstruction") or {}).get("cuts", []):
        lines.append(
            f"Reconstruction for the cut of blocks {cut.get('removed')}: blocks {cut.get('trained_blocks')} trained "
            f"{cut.get('steps')} steps ({record['reconstruction'].get('loss')} loss), held-out loss "
            f"{cut.get('heldout_loss_before')} -> {cut.get('heldout_loss_after')}"
        )
    return lines


def _auto_lines(choice: dict[str, Any] | None) -> list[str]:
    """Card lines for ``criterion="auto"`` (``plan.reason["auto"]``): the choice and every candidate's outcome."""
    if not choice:
        return []
    outcomes = [
        f"{name}: {c['heldout_perplexity']}" if "heldout_perplexity" in c else f"{name}: skipped ({c.get('skipped')})"
        for name, c in (choice.get("candidates") or {}).items()
    ]
    return [
        f"Criterion chosen by `auto`: `{choice.get('chosen')}` ({choice.get('chosen_by')}; dense "
        f"{choice.get('dense_heldout_perplexity')}); held-out perplexity per candidate: {'; '.join(outcomes)}"
    ]


def _removal_lines(config, plan: PruningPlan | None, scores: LayerScores | None) -> list[str]:
    total = source_num_layers(config)
    if plan is None:
        return ["Nothing: the config records no pruning (a dense model)."]
    lines = []
    if plan.removed_blocks:
        lines.append(
            f"Removed decoder blocks (original numbering 0-{total - 1}): {list(plan.removed_blocks)}, "
            f"{len(plan.removed_blocks)} of {total}"
        )
    if plan.removed_attention:
        lines.append(f"Removed attention sublayers (original blocks): {list(plan.removed_attention)}")
    if plan.removed_mlp:
        lines.append(f"Removed MLP sublayers (original blocks): {list(plan.removed_mlp)}")
    lines.append(f"Kept blocks: {original_layer_indices(config)}")
    steps = _pruning_steps(config)
    for number, step in enumerate(steps, start=1):
        prefix = f"Step {number}: c" if len(steps) > 1 else "C"
        calibration = step.get("calibration") or {}
        lines.append(
            f"{prefix}riterion `{step.get('criterion', plan.criterion)}`, "
            f"target {format_settings(step.get('target') or {})}; "
            f"calibration {format_settings(calibration) if calibration else 'none (data-free criterion)'}; "
            f"protected blocks {step.get('protected_layers') or 'none'}; seed {step.get('seed')}"
        )
        lines.extend(_compensation_lines(step.get("compensation")))
    if not steps and plan.criterion:
        lines.append(f"Criterion: `{plan.criterion}`")
    lines.extend(_auto_lines(plan.reason.get("auto")))
    chosen = plan.reason.get("scores")
    if isinstance(chosen, dict) and chosen:
        kind = "block " if plan.granularity == "block" else ""
        shown = ", ".join(
            f"{kind}{k}: {v:.4g}" if isinstance(v, float) else f"{kind}{k}: {v}" for k, v in chosen.items()
        )
        lines.append(f"Importance of the removed candidates: {shown}")
    if scores is not None:
        lines.append(f"Scoring: {len(scores.values)} candidates in {scores.elapsed_seconds:.1f} s")
    return lines


def _sparsity_section(config) -> str | None:
    """The ``## Weight sparsity`` section of a model :func:`optimum_depth.sparsity.sparsify` ran on, else ``None``."""
    record = getattr(config, "sparsity", None)
    return sparsity_card_section(record) if isinstance(record, dict) else None


# --------------------------------------------------------------------------------------------------------- metadata
def inherited_license(*sources: str | None) -> dict[str, str]:
    """License metadata of the first base model whose card is available locally (a directory or the HF cache).

    Nothing is downloaded: pass ``license=`` to :func:`build_model_card` when the base card is not at hand.

    Args:
        *sources: Local paths or Hub ids of the base model.

    Returns:
        ``{"license": ...}`` (plus ``license_name``/``license_link`` for ``other``), or ``{}`` if unknown.
    """
    for source in sources:
        if not source:
            continue
        readme: str | None = None
        if os.path.isdir(source):
            readme = os.path.join(source, "README.md")
        elif is_hub_id(source):
            cached = try_to_load_from_cache(source, "README.md")
            readme = cached if isinstance(cached, str) else None
        if readme is None or not os.path.isfile(readme):
            continue
        metadata = metadata_load(readme) or {}
        if metadata.get("license"):
            return {k: str(metadata[k]) for k in ("license", "license_name", "license_link") if metadata.get(k)}
    return {}


def _load_code(config, repo_id: str, with_tokenizer: bool) -> tuple[str, str]:
    sublayer = str(getattr(config, "model_type", "")).startswith("pruned_")
    lines = ["import optimum_depth  # registers the pruned model classes"] if sublayer else []
    lines.append("from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if with_tokenizer else ""))
    lines += ["", f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")']
    if with_tokenizer:
        lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")')
    if not sublayer:
        note = (
            f"A block-pruned checkpoint is a plain `{config.model_type}` model with fewer layers: it loads natively, "
            "without optimum-depth. Its provenance is in `config.json` (`surviving_layers`, `pruning`)."
        )
    elif getattr(config, "auto_map", None):
        note = (
            "Sublayers were removed, so the checkpoint needs the pruned model classes: `pip install optimum-depth` "
            "and `import optimum_depth`, or `trust_remote_code=True` to use the code shipped in this "
            "repository."
        )
    else:
        note = "Sublayers were removed, so the checkpoint needs the pruned model classes: `pip install optimum-depth`."
    return "\n".join(lines), note


def _summary(config, plan: PruningPlan | None, base_model: str | None, params: dict[str, Any]) -> str:
    source = public_value(getattr(config, "source_model", None))
    if base_model:
        subject = f"A depth-pruned version of [{base_model}](https://huggingface.co/{base_model})"
    else:
        subject = f"A depth-pruned version of `{source}`" if source else "A depth-pruned model"
    removed = f"{len(plan.removed_blocks) if plan else 0} of its {source_num_layers(config)} decoder blocks"
    if plan is not None and plan.granularity == "sublayer":
        removed += f" and {len(plan.removed_attention) + len(plan.removed_mlp)} attention/MLP sublayers"
    share = f" ({params['share']} of {params['dense']})" if params["dense"] != NOT_MEASURED else ""
    return f"{subject}: {removed} were removed, leaving {params['pruned']} parameters{share}."


@dataclass
class CardOptions:
    """What a model card says that the checkpoint itself cannot tell.

    Args:
        repo_id: Hub id the card is for (title, loading snippet).
        base_model: Hub id of the model that was pruned (default: ``config.source_model`` when it is a Hub id).
        license: License id (default: inherited from the base model's card when available locally).
        recovery: The recovery training done (a dict of settings or a sentence); default: ``config.recovery``, which
            :func:`optimum_depth.training.save_recovered_model` records.
        extra_tags: More Hub tags.
        template_str: A jinja template replacing the packaged one (same variables, see :func:`default_template`).
    """

    repo_id: str | None = None
    base_model: str | None = None
    license: str | None = None
    recovery: dict[str, Any] | str | None = None
    extra_tags: tuple[str, ...] = ()
    template_str: str | None = None

    def __post_init__(self) -> None:
        for name in ("repo_id", "base_model"):
            value = getattr(self, name)
            if value is not None:
                try:
                    validate_repo_id(value)
                except HFValidationError as err:
                    raise ConfigError(f"`{name}` must be a Hub repository id, got {value!r}: {err}") from err
        self.extra_tags = tuple(self.extra_tags)


def _model_name(config, plan: PruningPlan | None, repo_id: str | None, base_model: str | None) -> str:
    """The card's title: the repository's name, else the source model's name and what was removed."""
    if repo_id:
        return repo_id.split("/")[-1]
    source = base_model or public_value(getattr(config, "source_model", None)) or "model"
    name = str(source).rstrip("/").split("/")[-1]
    if plan is None:
        return name
    total = source_num_layers(config)
    if plan.granularity == "sublayer":
        removed = len(plan.removed_attention) + len(plan.removed_mlp) + 2 * len(plan.removed_blocks)
        return f"{name}-finercut-{removed}-of-{2 * total}-sublayers"
    return f"{name}-depth-pruned-{len(plan.removed_blocks)}-of-{total}-blocks"


def _card_data(config, plan, pruned, options: CardOptions, base_model, model_name: str, steps) -> ModelCardData:
    """The card's metadata: base model, tags, license and the ``model-index`` of the measured results."""
    source = getattr(config, "source_model", None)
    local = find_local_model(getattr(config, "source_model_digest", None))  # only where it was pruned
    sources = (base_model, str(local) if local is not None else source)
    license_data = {"license": options.license} if options.license else inherited_license(*sources)
    criteria = [s.get("criterion") for s in steps] or [plan.criterion if plan else None]
    tags = ["depth-pruning", "optimum-depth", *[str(c).replace("_", "-") for c in criteria if c], *options.extra_tags]
    eval_results = card_eval_results(pruned) if pruned is not None else []
    return ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        license=license_data.get("license"),
        license_name=license_data.get("license_name"),
        license_link=license_data.get("license_link"),
    )


def build_model_card(
    model,
    results: EvaluationResults | ComparisonResults | None = None,
    plan: PruningPlan | None = None,
    scores: LayerScores | None = None,
    *,
    options: CardOptions | None = None,
    files: list[str] | None = None,
) -> ModelCard:
    """Generates the model card of a pruned model from the packaged template.

    Args:
        model: The pruned model (possibly peft-wrapped); its config holds the provenance.
        results: Measured results: :class:`ComparisonResults` (dense vs pruned) or the pruned model's
            :class:`EvaluationResults`. ``model-index`` holds the pruned model's values.
        plan: The plan that was applied (default: rebuilt from the config).
        scores: Importance scores (scoring summary; dense parameter count for a single pruning step).
        options: Repository id, base model, license, recovery, tags, template (see :class:`CardOptions`).
        files: Names of the files of the repository the card goes with, listed at its end; the plot is shown when
            ``layer_scores.png`` is among them, and the loading snippet uses the tokenizer when one is. ``None``
            (a card not tied to a folder) lists no file.

    Returns:
        The :class:`~huggingface_hub.ModelCard`.

    Raises:
        TypeError: If ``results`` is of the wrong type.
        PlanMismatchError: If ``plan`` does not describe ``model`` (a ``ValueError``).
    """
    options = options or CardOptions()
    _, pruned, _ = split_results(results)
    config = unwrap_model(model).config
    plan = effective_plan(config, plan)
    source = getattr(config, "source_model", None)
    local_source = getattr(config, "source_model_digest", None)  # a local folder, named by its folder name
    base_model = options.base_model or (source if is_hub_id(source) and not local_source else None)
    model_name = _model_name(config, plan, options.repo_id, base_model)
    steps = _pruning_steps(config)
    card_data = _card_data(config, plan, pruned, options, base_model, model_name, steps)

    # The scores were taken on the dense model only when there was a single pruning step.
    dense_parameters = (scores.total_params or None) if scores is not None and len(steps) <= 1 else None
    sections = measured_sections(
        results,
        count_parameters(unwrap_model(model)),
        dense_parameters,
        config.num_hidden_layers,
        source_num_layers(config),
    )
    names = sorted(set(files or []) | ({CARD_NAME} if files is not None else set()))
    with_tokenizer = files is None or any(describe_file(name) == "tokenizer" for name in names)
    load_code, load_note = _load_code(config, options.repo_id or "path/or/repo-id", with_tokenizer)
    recovery = options.recovery if options.recovery is not None else getattr(config, "recovery", None)
    if isinstance(recovery, dict):
        recovery_lines = [f"{k}: {v}" for k, v in public_value(recovery).items()]
    else:
        recovery_lines = [recovery] if recovery else []
    return ModelCard.from_template(
        card_data,
        template_str=options.template_str or default_template(),
        title=model_name,
        summary=_summary(config, plan, base_model, sections["params"]),
        version=__version__,
        removal_lines=_removal_lines(config, plan, scores),
        sparsity_section=_sparsity_section(config),
        plot_file=PLOT_NAME if PLOT_NAME in names else None,
        recovery_lines=recovery_lines,
        load_code=load_code,
        load_note=load_note,
        files=[(name, describe_file(name)) for name in names],
        **sections,
    )
