"""Shared fixtures: models are loaded once per session (load_model memoises them).

``SEQCIRC_TEST_DEVICE`` (default ``cpu``) is the device of the model fixtures, e.g.
``SEQCIRC_TEST_DEVICE=cuda pytest -m gpu``. Tests marked ``gpu`` are skipped without CUDA; tests
that use the ``smollm`` fixture are marked ``embedded`` automatically.
"""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_grad_enabled(True)

TEST_DEVICE = os.environ.get("SEQCIRC_TEST_DEVICE", "cpu")


def pytest_configure(config):
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"SEQCIRC_TEST_DEVICE={TEST_DEVICE} but CUDA is not available here; unset it (cpu)")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if "smollm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.embedded)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def device() -> str:
    """The device model-level tests run on (``SEQCIRC_TEST_DEVICE``, default ``cpu``)."""
    return TEST_DEVICE


@pytest.fixture(scope="session")
def tiny_gpt2():
    from seqcirc_utils.models import load_model

    return load_model("tiny-gpt2", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_llama():
    from seqcirc_utils.models import load_model

    return load_model("tiny-llama", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def smollm():
    from seqcirc_utils.models import load_model

    return load_model("smollm2-135m", device=TEST_DEVICE)


def hook_registry(model) -> int:
    """Number of hooks registered anywhere on the model (TransformerLens hook points and torch modules)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    return total
