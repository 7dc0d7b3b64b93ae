"""``push_to_hub``: a pruned model, its tokenizer, card, plan, scores, results and plot, in one Hub commit.

Everything is written to a temporary directory and checked first; only then is the repository created and the
files sent with a single :meth:`huggingface_hub.HfApi.create_commit`. The token is handed to ``HfApi`` and nothing
else: it never reaches the card, the logs or the uploaded files.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import PreTrainedModel

from ..architectures import unwrap_model
from ..constants import CARD_NAME, MANIFEST_NAME, OWN_WEIGHT_PATTERN, PLOT_NAME, SAFETENSORS_INDEX_NAME
from ..errors import ConfigError, HubError
from ..evaluation.results import ComparisonResults, EvaluationResults
from ..plan import PruningPlan
from ..scores import LayerScores
from .cards import CardOptions, build_model_card, effective_plan
from .saving import save_pruned_model

logger = logging.getLogger(__name__)

__all__ = ["PushSettings", "push_to_hub", "resolve_token"]


@dataclass
class PushSettings:
    """Where and how :func:`push_to_hub` commits.

    Args:
        private: Visibility of a newly created repository (``None``: the Hub default).
        token: Hub token (default: the locally saved one). Never written anywhere, not shown in ``repr``.
        endpoint: Hub endpoint (default: ``HF_ENDPOINT`` / huggingface.co).
        revision: Branch to commit to (default ``main``).
        create_pr: Open a pull request instead of committing to the branch.
        commit_message: Commit title.
        max_shard_size: Passed to ``save_pretrained``.
    """

    private: bool | None = None
    token: str | bool | None = field(default=None, repr=False)
    endpoint: str | None = None
    revision: str | None = None
    create_pr: bool = False
    commit_message: str = "Upload depth-pruned model (optimum-depth)"
    max_shard_size: int | str = "5GB"


def _check_inputs(model, repo_id: str, results, plan, scores, plot) -> PreTrainedModel:
    """Validates every argument before anything is written or sent."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"`repo_id` {repo_id!r} is not a valid Hub repository id: {err}") from err
    inner = unwrap_model(model)
    if hasattr(model, "merge_and_unload") or hasattr(inner, "peft_config"):
        raise ConfigError(
            "push_to_hub uploads plain transformers checkpoints; merge the adapters first "
            "(`model = model.merge_and_unload()`) or push the adapter with peft's own `push_to_hub`."
        )
    if not isinstance(inner, PreTrainedModel):
        raise ConfigError(f"`model` must be a transformers PreTrainedModel, got {type(inner).__name__}.")
    if results is not None and not isinstance(results, (EvaluationResults, ComparisonResults)):
        raise ConfigError(f"`results` must be EvaluationResults or ComparisonResults, got {type(results).__name__}.")
    if plan is not None and not isinstance(plan, PruningPlan):
        raise ConfigError(f"`plan` must be a PruningPlan, got {type(plan).__name__}.")
    if scores is not None and not isinstance(scores, LayerScores):
        raise ConfigError(f"`scores` must be LayerScores, got {type(scores).__name__}.")
    if isinstance(plot, (str, os.PathLike)) and not (os.path.isfile(plot) and os.fspath(plot).endswith(".png")):
        raise ConfigError(f"`plot` must be an existing .png file (or True/False), got {os.fspath(plot)!r}.")
    if plot is True and scores is None:
        logger.info("No scores given: the card will have no importance plot.")
    return inner


def resolve_token(settings: PushSettings) -> str:
    """The token to use, refusing early (before anything is written) when none is available."""
    from huggingface_hub import get_token

    token = settings.token if isinstance(settings.token, str) else None
    token = token or (get_token() if settings.token is not False else None)
    if not token:
        raise HubError(
            "No Hugging Face token: pass `token=` (--token), set HF_TOKEN, or run `hf auth login`. Nothing was sent."
        )
    return token


def _list_files(folder: Path) -> list[str]:
    """The files to upload (the local save manifest stays local)."""
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    )


def _stale_weights(api: HfApi, repo_id: str, revision: str | None, uploaded: list[str]) -> list[str]:
    """Weight files of an earlier push that this one does not replace: ``save_pretrained``'s names only.

    A file is never taken for an old weight by its extension: ``optimizer.pt`` or ``sd_vae.safetensors`` in the
    repository are left alone.
    """
    existing = api.list_repo_files(repo_id, revision=revision)
    return [
        name
        for name in existing
        if (re.fullmatch(OWN_WEIGHT_PATTERN, name) or name == SAFETENSORS_INDEX_NAME) and name not in uploaded
    ]


def _request_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub request raises: ``OSError`` & co, and the HTTP client's own errors (httpx / httpx2 connection
    errors are not ``OSError``s)."""
    errors: list[type[BaseException]] = [OSError, RuntimeError, ValueError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _hub_failure(err: BaseException, endpoint: str) -> HubError:
    """One clear line for a failed Hub request: the endpoint and the cause."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError) and err.response is not None:
        cause = f"HTTP {err.response.status_code} {err.response.reason_phrase}".strip()
        if err.response.status_code in (401, 403):
            cause += " (is the token valid and allowed to write to this repository?)"
    else:
        cause = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no answer'}"
    return HubError(f"The Hub at {endpoint} refused or did not answer the upload: {cause}. Nothing was committed.")


def _commit(folder: Path, repo_id: str, settings: PushSettings, token: str) -> tuple[CommitInfo, list[str]]:
    """Creates the repository if needed and commits every file of ``folder`` (and deletes stale weights) at once."""
    api = HfApi(endpoint=settings.endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=settings.private, exist_ok=True)
    full_id = repo_url.repo_id
    uploaded = _list_files(folder)
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in uploaded
    ]
    stale = _stale_weights(api, full_id, settings.revision, uploaded)
    operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
    commit = api.create_commit(
        full_id,
        operations,
        commit_message=settings.commit_message,
        revision=settings.revision,
        create_pr=settings.create_pr,
    )
    logger.info(
        "Pushed %d files%s to %s in commit %s.",
        len(uploaded),
        f" (and deleted stale weights {stale})" if stale else "",
        repo_url,
        commit.oid,
    )
    return commit, stale


def push_to_hub(
    model,
    repo_id: str,
    tokenizer=None,
    *,
    results: EvaluationResults | ComparisonResults | None = None,
    plan: PruningPlan | None = None,
    scores: LayerScores | None = None,
    plot: bool | str | os.PathLike = True,
    card: CardOptions | ModelCard | None = None,
    settings: PushSettings | None = None,
) -> CommitInfo:
    """Uploads a pruned model with its card and pruning records to the Hub in one commit.

    The repository receives the safetensors weights, ``config.json`` (with the pruning provenance), the tokenizer,
    ``README.md`` (generated, listing exactly the files uploaded, unless ``card`` is a ready card),
    ``pruning_plan.json``, ``layer_scores.json``, ``evaluation_results.json`` and ``layer_scores.png`` (those
    whose inputs are given). Weight files of an earlier push that this one does not overwrite are deleted in the
    same commit, so the repository never mixes two checkpoints.

    Args:
        model: The pruned model (a transformers model; merge peft adapters first).
        repo_id: ``"namespace/name"`` or ``"name"`` (the token's user namespace).
        tokenizer: Tokenizer uploaded beside the weights.
        results: Measured results (:class:`~optimum_depth.evaluation.ComparisonResults` for dense vs pruned).
        plan: The applied plan (default: rebuilt from the config's provenance).
        scores: Importance scores (uploaded, and plotted when ``plot`` is true).
        plot: ``True`` to draw the scores (needs matplotlib), ``False`` for none, or the path of a PNG to upload.
        card: :class:`~optimum_depth.publishing.cards.CardOptions` for the generated card (base model, license,
            recovery, ...; ``repo_id`` defaults to this one), or a ready :class:`~huggingface_hub.ModelCard`.
        settings: Where and how to commit (token, endpoint, privacy, branch, ...).

    Returns:
        The :class:`~huggingface_hub.CommitInfo` of the commit.

    Raises:
        ConfigError: If the model or a record has the wrong type, ``repo_id`` is invalid, the plan does not describe
            the model or ``plot`` is not a PNG (nothing is sent).
        HubError: If no token is available (checked first), or the Hub cannot be reached or refuses the commit.
        ImportError: If ``plot=True`` with scores and matplotlib is missing (nothing is sent).
    """
    settings = settings or PushSettings()
    inner = _check_inputs(model, repo_id, results, plan, scores, plot)
    plan = effective_plan(inner.config, plan)
    token = resolve_token(settings)
    if card is None or isinstance(card, CardOptions):
        card = dataclasses.replace(card or CardOptions(), repo_id=(card.repo_id if card else None) or repo_id)
    endpoint = settings.endpoint or constants.ENDPOINT
    with tempfile.TemporaryDirectory(prefix="optimum-depth-push-") as tmp:
        folder = Path(tmp) / "repo"
        save_kwargs = {"max_shard_size": settings.max_shard_size}
        user_plot = plot if isinstance(plot, (str, os.PathLike)) else None
        save_pruned_model(
            inner,
            folder,
            tokenizer,
            plan=plan,
            scores=scores,
            results=results,
            plot=plot is True and scores is not None,
            card=card if user_plot is None else None,
            **save_kwargs,
        )
        if user_plot is not None:  # a user's PNG: copy it in, then write the card that shows it
            shutil.copyfile(user_plot, folder / PLOT_NAME)
            if not isinstance(card, ModelCard):
                card = build_model_card(inner, results, plan, scores, options=card, files=_list_files(folder))
            card.save(folder / CARD_NAME)
        try:
            commit, _ = _commit(folder, repo_id, settings, token)
        except _request_errors() as err:
            raise _hub_failure(err, endpoint) from err
    return commit
