"""Test settings: offline, one thread, a temporary HF_HOME, and tiny models of every supported family.

Everything the tests write outside their ``tmp_path`` (the Hugging Face cache, the record of local source models)
goes into one temporary folder, removed when the session ends: the tests leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile

TEST_ROOT = tempfile.mkdtemp(prefix="optimum-depth-tests-")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(TEST_ROOT, "hf-home")
os.environ["OPTIMUM_DEPTH_LOCAL_MODELS"] = os.path.join(TEST_ROOT, "local_models.json")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from tiny_models import FAMILIES, STORIES_PATH, make_tiny_model  # noqa: E402

NO_SKIP_ENV = "OPTIMUM_DEPTH_REQUIRE_DATA"
"""Set to 1 by ``.ci/run``: a test that would skip (missing ../shared data or model, a missing optional package)
fails instead, so a CI without its data cannot pass green."""


def pytest_sessionfinish(session, exitstatus):
    """Removes the session's temporary Hugging Face home and local-model record."""
    shutil.rmtree(TEST_ROOT, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(NO_SKIP_ENV) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{NO_SKIP_ENV}=1 forbids skipping, but this test skipped: {reason}"


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    """Every supported model family, by model type."""
    return request.param


@pytest.fixture
def tiny_model(family):
    """A tiny random causal LM of ``family`` (6 blocks), seeded."""
    return make_tiny_model(family)


@pytest.fixture
def stories_path():
    """Path of the real 5-layer TinyStories Llama in ../shared (skips if absent)."""
    if not STORIES_PATH.is_dir():
        pytest.skip("../shared/models/stories260K is not available")
    return STORIES_PATH
