"""Greater-than's exact two-digit probability difference, for the full model and for circuits.

Hanna et al.'s PD sums the probability of every two-digit continuation ``v`` above the start value
``YY`` and subtracts the mass at or below it. How exact one forward pass can be depends on how the
tokenizer spells years (:func:`seqcirc_utils.tasks.datasets.greater_than_groups`):

- ``two_digit`` (GPT-2): ``YY`` is one token, so the final position's distribution over the 100
  two-digit tokens gives the PD exactly (one pass; this is also the pruning metric).
- ``digit`` (SmolLM2): the next token is the tens digit only. The pruning metric is the
  **tens-digit approximation** (:func:`seqcirc_utils.core.metrics.greater_than_prob_diff`). The exact PD
  uses the chain rule, p(10 a + c) = p(a | prompt) x p(c | prompt, a), over all 100 continuations:
  one pass for the tens digit and a second pass with each tens digit ``a`` appended (all prompts of
  one appended digit batched together: 10 batched passes).

A circuit's exact PD applies the circuit's ablation in **both** passes. In the second pass the
appended token's position gets the replacement value of the corrupted twin with the same digit
appended (``mean``: its mean over the corrupted prompts, per appended digit; ``resample``: the paired
corrupted prompt with that digit; ``zero``: zeros); the prompt's own positions use the
:class:`~seqcirc_utils.scoring.ablation.Ablator`'s values unchanged (a causal model's earlier positions do
not see the appended token).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from seqcirc_utils.core import metrics
from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.options import AblationMode
from seqcirc_utils.core.stats import cluster_bootstrap_ratio_ci
from seqcirc_utils.core.types import Component
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.scoring.ablation import Ablator, ablation_hooks, component_hook_name
from seqcirc_utils.tasks.datasets import GREATER_THAN

YEAR_MODES = {
    "two_digit": "two-digit year tokens: the final position's PD is exact (one pass)",
    "digit": "digit tokens: exact PD by the chain rule p(tens) x p(units | tens) over all 100 continuations",
}


def year_mode(groups: list[list[int]]) -> str:
    """``"two_digit"`` (100 value groups, one per ``YY``) or ``"digit"`` (10 groups, one per digit)."""
    if len(groups) == 100:
        return "two_digit"
    if len(groups) == 10:
        return "digit"
    raise ValueError(f"greater-than groups must cover 100 two-digit values or 10 digits, got {len(groups)}")


class ExactProbDiff:
    """The exact two-digit PD of circuits on one greater-than dataset (the :class:`Ablator`'s).

    Construction costs, in digit mode, 10 corrupted passes (the appended position's replacement
    values) and 10 clean passes (the full model's second digit); ``full`` holds the full model's
    per-prompt exact PD ``[batch]``. Each :meth:`values` call then costs 1 + 10 batched passes
    (one in two-digit mode). ``forward_passes`` counts the passes made here.
    """

    def __init__(self, ablator: Ablator, batch_size: int = 64) -> None:
        ds = ablator.dataset
        if ds.task != GREATER_THAN or not ds.greater_than_groups:
            raise ParameterError(f"the exact probability difference is for task {GREATER_THAN}, not {ds.task}")
        self.ablator = ablator
        self.batch_size = batch_size
        self.groups = [list(g) for g in ds.greater_than_groups]
        self.mode = year_mode(self.groups)
        self.yy = ds.years % 100
        self.forward_passes = 0
        self._appended: list[dict[str, torch.Tensor]] = []
        if self.mode == "digit":
            bad = [g for g in self.groups if len(g) != 1]
            if bad:
                raise TokenizationError(f"digit mode needs one token per digit, got groups {bad}")
            self.digit_ids = [g[0] for g in self.groups]
            self._appended = [self._appended_values(d) for d in self.digit_ids]
        self.full = self.values(())

    # ---- replacement values of the appended position
    def _appended_values(self, digit_id: int) -> dict[str, torch.Tensor]:
        """Per hook point: the appended position's replacement value, ``[1, ...]`` (mean, zero) or
        ``[batch, 1, ...]`` (resample), from the corrupted prompts with ``digit_id`` appended."""
        ab = self.ablator
        names = sorted({component_hook_name(c) for c in ab.info.components})
        tokens = _append(ab.dataset.corrupted_tokens, digit_id)
        store: dict[str, torch.Tensor] = {}

        def keeper(name: str):
            def keep(act, hook=None):  # noqa: ARG001 - TransformerLens signature
                last = act[:, -1:].detach()
                if ab.mode is AblationMode.MEAN:
                    store[name] = last.mean(0)
                elif ab.mode is AblationMode.ZERO:
                    store[name] = torch.zeros_like(last[0])
                else:
                    store[name] = last
                return act

            return keep

        final_logits(ab.model, tokens, batch_size=len(tokens), fwd_hooks=[(n, keeper(n)) for n in names])
        self.forward_passes += 1
        return store

    def _extended_values(self, i: int) -> dict[str, torch.Tensor]:
        """Replacement values over the prompt plus the ``i``-th appended digit (``seq_len + 1`` positions)."""
        out = {}
        for name, last in self._appended[i].items():
            base = self.ablator.values[name]
            dim = 1 if self.ablator.mode is AblationMode.RESAMPLE else 0  # [batch, pos, ...] vs [pos, ...]
            out[name] = torch.cat([base, last.to(base.device, base.dtype)], dim=dim)
        return out

    # ---- the exact PD
    def values(self, ablated: Iterable[Component]) -> torch.Tensor:
        """Per-prompt exact two-digit PD ``[batch]`` with ``ablated`` components ablated (in both passes)."""
        ab = self.ablator
        ablated = list(ablated)
        if ablated:
            logits = ab.logits(ablated)
            self.forward_passes += 1
        else:
            logits = ab.full_logits
        if self.mode == "two_digit":
            return metrics.greater_than_prob_diff(logits, self.yy, self.groups)
        ids = torch.tensor(self.digit_ids, device=logits.device)
        first = logits.softmax(-1)[:, ids]  # [batch, 10]
        seconds = []
        for i, d in enumerate(self.digit_ids):
            tokens = _append(ab.dataset.tokens, d)
            hooks = (
                ablation_hooks(ab.info, ablated, self._extended_values(i), tokens.shape[1], ab.positions)
                if ablated
                else []
            )
            second = final_logits(ab.model, tokens, batch_size=self.batch_size, fwd_hooks=hooks)
            self.forward_passes += 1
            seconds.append(second.softmax(-1)[:, ids.to(second.device)])
        second = torch.stack(seconds, dim=1).to(first.device)  # [batch, tens digit, units digit]
        return metrics.two_digit_prob_diff(first, second, self.yy)

    def score(self, kept: Iterable[Component], n_resamples: int = 1000, seed: int = 0) -> dict:
        """The circuit ``kept``'s exact PD: ``{"mode", "full", "circuit", "score", "ci95"}`` (every
        component outside ``kept`` ablated; ``score`` = circuit / full, ``ci95`` a cluster bootstrap over sequence identities)."""
        kept = set(kept)
        circuit = self.values([c for c in self.ablator.info.components if c not in kept])
        full_mean, circuit_mean = float(self.full.mean()), float(circuit.mean())
        return {
            "mode": self.mode,
            "full": full_mean,
            "circuit": circuit_mean,
            "score": circuit_mean / full_mean,
            "ci95": list(
                cluster_bootstrap_ratio_ci(circuit, self.full, self.ablator.dataset.sequence_ids, n_resamples, seed)
            ),
        }


def _append(tokens: torch.Tensor, token_id: int) -> torch.Tensor:
    """``tokens`` ``[batch, pos]`` with ``token_id`` appended to every row, ``[batch, pos + 1]``."""
    return torch.cat([tokens, torch.full((tokens.shape[0], 1), int(token_id), dtype=tokens.dtype)], dim=1)
