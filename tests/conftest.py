"""Shared fixtures: models are loaded once per session (load_model memoises them)."""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_grad_enabled(True)


@pytest.fixture(scope="session")
def tiny_gpt2():
    from seqcirc_utils.models import load_model

    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def tiny_llama():
    from seqcirc_utils.models import load_model

    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    from seqcirc_utils.models import load_model

    return load_model("smollm2-135m", device="cpu")


def hook_registry(model) -> int:
    """Number of hooks registered anywhere on the model (TransformerLens hook points and torch modules)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    return total
