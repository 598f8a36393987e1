"""Batched forward passes that return only what the metrics need: final-position logits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from seqcirc_utils.models.loading import model_device


def final_logits(
    model,
    tokens: torch.Tensor,
    batch_size: int = 64,
    fwd_hooks: Iterable = (),
    grad: bool = False,
) -> torch.Tensor:
    """Logits at the last position, ``[batch, d_vocab]``.

    All prompts of a dataset share one token length, so the last position is the prediction
    position. Only that position is unembedded (``logits_to_keep=1``), which saves the
    ``[batch, pos, d_vocab]`` product. ``fwd_hooks`` are ``(hook_name, fn)`` pairs, active for the
    call only and removed afterwards even on error.
    """
    tokens = tokens.to(model_device(model))
    outs = []
    hooks = list(fwd_hooks)
    ctx = contextlib.nullcontext() if grad else torch.no_grad()
    with ctx:
        for start in range(0, tokens.shape[0], batch_size):
            chunk = tokens[start : start + batch_size]
            if hooks:
                with model.hooks(fwd_hooks=hooks):
                    logits = model(chunk, logits_to_keep=1)
            else:
                logits = model(chunk, logits_to_keep=1)
            outs.append(logits[:, -1, :])
    return torch.cat(outs, 0)
