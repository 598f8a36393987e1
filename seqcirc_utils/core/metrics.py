"""Metrics on final-position logits.

Shapes: ``logits`` is ``[batch, d_vocab]`` (the final position only), token ids are ``[batch]``.
Logit differences are in nats (raw logits); probabilities in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def logit_diff(logits: torch.Tensor, answer_ids: torch.Tensor, incorrect_ids: torch.Tensor) -> torch.Tensor:
    """Per-prompt ``logit[correct] - logit[incorrect]``, ``[batch]``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, answer_ids.to(logits.device)] - logits[rows, incorrect_ids.to(logits.device)]


def mean_logit_diff(logits: torch.Tensor, answer_ids: torch.Tensor, incorrect_ids: torch.Tensor) -> float:
    """Mean logit difference over the batch (the paper's circuit metric), a float."""
    return float(logit_diff(logits, answer_ids, incorrect_ids).mean())


def percent_of_full(value: float, full: float) -> float:
    """``100 * value / full``: a circuit's metric as a percentage of the full model's."""
    if full == 0:
        raise ZeroDivisionError("the full model's metric is 0; percent of full is undefined")
    return 100.0 * value / full


def normalised_recovery(patched: float, clean: float, corrupted: float) -> float:
    """``(patched - corrupted) / (clean - corrupted)``: 1 = clean behaviour, 0 = corrupted."""
    if clean == corrupted:
        raise ZeroDivisionError("clean and corrupted metrics are equal; recovery is undefined")
    return (patched - corrupted) / (clean - corrupted)


def kl_to_full(logits: torch.Tensor, full_logits: torch.Tensor) -> torch.Tensor:
    """Per-prompt ``KL(full || logits)`` of the final-position distributions, in nats, ``[batch]``."""
    full_logp = full_logits.log_softmax(-1)
    logp = logits.log_softmax(-1)
    return (full_logp.exp() * (full_logp - logp)).sum(-1)


def top1_accuracy(logits: torch.Tensor, answer_ids: torch.Tensor) -> float:
    """Fraction of prompts whose argmax is the answer."""
    return float((logits.argmax(-1) == answer_ids.to(logits.device)).float().mean())


def prob_of(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Per-prompt probability of ``token_ids`` at the final position, ``[batch]``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits.softmax(-1)[rows, token_ids.to(logits.device)]


def greater_than_prob_diff(
    logits: torch.Tensor, thresholds: torch.Tensor, groups: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Hanna et al.'s probability difference, per prompt ``[batch]``.

    ``groups[v]`` lists the token ids that spell value ``v`` at the final position, and
    ``thresholds[b]`` is prompt b's value to beat. PD = sum_{v > t} p(v) - sum_{v <= t} p(v),
    using the probabilities of these tokens only.

    - Two-digit tokenizers (GPT-2): ``v`` = 00..99 and ``t`` = YY (Hanna's definition).
    - Digit tokenizers (SmolLM2 spells "1732" as 1,7,3,2): the next token is the tens digit, so
      ``v`` = 0..9 and ``t`` = the tens digit of YY; the tie digit ``t`` is neither larger nor
      smaller at this token and is excluded: PD = sum_{d > t} p(d) - sum_{d < t} p(d). This is the
      **tens-digit approximation** (cheap: one pass; used as the pruning metric). The exact
      two-digit PD follows by the chain rule, :func:`two_digit_prob_diff`.
    """
    probs = logits.softmax(-1)
    ids = [list(g) for g in groups]
    per_value = torch.stack([probs[:, g].sum(-1) for g in ids], dim=-1)  # [batch, n_values]
    values = torch.arange(len(ids), device=logits.device)
    t = thresholds.to(logits.device)[:, None]
    greater = (values[None] > t).float()
    if len(ids) == 10:  # digit mode: the tie digit is excluded
        lesser = (values[None] < t).float()
    else:
        lesser = (values[None] <= t).float()
    return (per_value * greater).sum(-1) - (per_value * lesser).sum(-1)


def greater_than_thresholds(years: torch.Tensor, n_values: int) -> torch.Tensor:
    """The value each prompt must beat: YY (two-digit tokens) or the tens digit of YY (digit tokens)."""
    yy = years % 100
    return yy if n_values == 100 else yy // 10


def two_digit_prob_diff(first: torch.Tensor, second: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Exact two-digit probability difference by the chain rule, per prompt ``[batch]``.

    ``first[b, a]`` = p(tens digit ``a`` | prompt) ``[batch, 10]`` and ``second[b, a, c]`` =
    p(units digit ``c`` | prompt, ``a``) ``[batch, 10, 10]`` (both from the full softmax, so they need
    not sum to 1); ``yy[b]`` is prompt b's two-digit start value (0..99). With p(v = 10 a + c) =
    ``first[b, a] * second[b, a, c]`` over all 100 continuations, PD = sum_{v > YY} p(v) -
    sum_{v <= YY} p(v) (Hanna et al.'s definition, the same as the two-digit-token case).
    """
    if first.shape[-1] != 10 or second.shape[-2:] != (10, 10):
        raise ValueError(
            f"expected first [batch, 10] and second [batch, 10, 10], got {tuple(first.shape)}, {tuple(second.shape)}"
        )
    joint = (first[:, :, None] * second).reshape(first.shape[0], 100)  # [batch, v = 10 a + c]
    values = torch.arange(100, device=joint.device)
    greater = values[None] > yy.to(joint.device)[:, None]
    return (joint * greater).sum(-1) - (joint * ~greater).sum(-1)
