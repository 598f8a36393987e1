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
    from seqcirc_utils.models.loading import load_model

    return load_model("tiny-gpt2", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_llama():
    from seqcirc_utils.models.loading import load_model

    return load_model("tiny-llama", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def smollm():
    from seqcirc_utils.models.loading import load_model

    return load_model("smollm2-135m", device=TEST_DEVICE)


def hook_registry(model) -> int:
    """Number of hooks registered anywhere on the model (TransformerLens hook points and torch modules)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    return total


@pytest.fixture(scope="module")
def one_thread():
    """Many small ops: on a shared 2-core machine, 2 intra-op threads spin against other processes
    (measured 15-80x slower than 1 thread on the tiny models)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def digits_ablator(model_info, name: str, n: int = 8):
    """An :class:`Ablator` on ``n`` pure-template digits prompts (seed 0)."""
    from seqcirc_utils.scoring.ablation import Ablator
    from seqcirc_utils.tasks.datasets import make_dataset

    model, info = model_info
    ds = make_dataset(model.tokenizer, "digits", template="pure", n=n, seed=0, model_name=name)
    return Ablator(model, info, ds)


@pytest.fixture(scope="module")
def gpt2_ab(tiny_gpt2):
    return digits_ablator(tiny_gpt2, "tiny-gpt2")


@pytest.fixture(scope="module")
def llama_ab(tiny_llama):
    return digits_ablator(tiny_llama, "tiny-llama")


def all_but_one_head(info):
    """Every component but one layer-0 head (so the circuit differs from the full model)."""
    from seqcirc_utils.core.types import head

    return set(info.components) - {head(0, 1)}


def o_proj(model, layer: int):
    """The HF output projection of block ``layer`` (its input is the heads' concatenated z)."""
    hf = model.original_model
    if hasattr(hf, "transformer"):  # GPT-2
        return hf.transformer.h[layer].attn.c_proj
    return hf.model.layers[layer].self_attn.o_proj


def raw_head_mean_replaced_logits(model, info, layer: int, index: int, source_tokens, target_tokens, positions=None):
    """Independent reference, plain torch hooks on the HF module: the final-position logits ``[batch, d_vocab]`` of
    ``target_tokens`` with head ``(layer, index)``'s input to the output projection replaced by its per-position
    mean over ``source_tokens`` (at every position, or only at ``positions``)."""
    proj = o_proj(model, layer)
    captured = []
    handle = proj.register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach().clone()))
    with torch.no_grad():
        model.original_model(source_tokens)
    handle.remove()
    mean = captured[0].mean(0)  # [pos, n_heads * d_head]
    sl = slice(index * info.d_head, (index + 1) * info.d_head)
    where = slice(None) if positions is None else list(positions)

    def replace(mod, args):
        x = args[0].clone()
        x[:, where, sl] = mean[where, sl]
        return (x,)

    handle = proj.register_forward_pre_hook(replace)
    try:
        with torch.no_grad():
            return model.original_model(target_tokens).logits[:, -1]
    finally:
        handle.remove()
