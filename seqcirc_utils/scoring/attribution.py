"""Node attribution: gradient estimates of what ablating a component does to the metric.

Shared by pruning (the fast method's ranking), :mod:`seqcirc_utils.scoring.importance` (every head's
estimated single-ablation drop) and :mod:`seqcirc_utils.discovery.edges.attribution` (the differentiable metric).

**Attribution patching** (``ig_steps=1``): ``attr(c) = sum_{batch, pos} (v_c - a_c) . g_c`` with
``a_c`` the component's clean activation, ``v_c`` its ablation value and ``g_c`` the metric's gradient
with respect to the component's output at the clean run: the first-order change of the metric when
``c`` alone is ablated (one forward + one backward pass for all components).

**Integrated gradients** (``ig_steps=k > 1``): every component ``c`` of the set ``S`` being attributed
gets a mask weight ``m_c`` and outputs ``o_c = a_c + m_c (v_c - a_c)``, where ``a_c`` is what the
component computes from its (already interpolated) inputs. Along the straight line ``m = alpha * 1``,
``dF/dalpha = sum_c (v_c - a_c(alpha)) . g_c(alpha)``, so

    IG(c) = (1/k) sum_{i} (v_c - a_c(alpha_i)) . g_c(alpha_i),   alpha_i = (i + 0.5) / k

(the midpoint rule) and the scores of all components sum to ``F(S ablated) - F(nothing in S
ablated)`` up to an error that shrinks as ``1/k^2`` (completeness). The activation difference is
taken at each interpolation point, as :mod:`seqcirc_utils.discovery.edges.attribution` does for edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import Component
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import Ablator, component_hook_name


def differentiable_metric(ablator: Ablator, logits: torch.Tensor) -> torch.Tensor:
    """The ablator's metric as a scalar tensor (dataset mean) that gradients flow through.

    ``logits``: final-position logits ``[batch, d_vocab]``. Logit difference (nats) or, for
    greater-than, the probability difference (the mode comes from the dataset's own groups and years).
    KL has a zero gradient at the full model and is refused.
    """
    if ablator.metric not in ("logit_diff", "prob_diff"):
        raise ParameterError(f"no differentiable form of metric '{ablator.metric}'; valid: logit_diff, prob_diff")
    return ablator.metric_values(logits).mean()  # the one metric dispatch (Ablator.metric_values)


def _component_mask(
    info: ModelInfo, hook_name: str, components: Sequence[Component], seq_len: int, positions: Sequence[int] | None
) -> torch.Tensor:
    """Float mask of the slots of ``components`` (all on ``hook_name``), broadcastable to the hook's
    activation ``[batch, pos, ...]``: ``[pos, n_heads, 1]`` (heads), ``[pos, 1]`` (MLP), ``[pos, d_mlp]`` (neurons)."""
    pos = torch.zeros(seq_len)
    if positions is None:
        pos[:] = 1.0
    else:
        pos[list(positions)] = 1.0
    kind = components[0].kind
    if kind == "mlp":
        return pos[:, None]
    width = info.n_heads if kind == "head" else info.d_mlp
    which = torch.zeros(width)
    which[[c.index for c in components]] = 1.0
    mask = pos[:, None] * which[None, :]
    return mask[:, :, None] if kind == "head" else mask


def attribution_scores(
    ablator: Ablator,
    components: Sequence[Component] | None = None,
    ig_steps: int = 1,
    ablated: Iterable[Component] = (),
) -> pd.Series:
    """Attribution estimate of each component's effect on the metric when ablated (see the module docstring).

    ``components``: the set ``S`` attributed (default: every head and MLP). ``ig_steps=1``: plain
    attribution patching at the clean run; ``ig_steps=k > 1``: integrated gradients from the clean run
    to the run with all of ``S`` ablated (every component of ``S`` interpolated at once), ``k`` forward
    and ``k`` backward passes. ``ablated`` components stay ablated throughout (attribution *inside* a
    circuit). With ``ablator.positions`` set, components are interpolated and summed at those
    positions only. Units: the metric's (logit difference in nats, or probability difference);
    negative = ablating it hurts. Counts 2 passes per step on ``ablator.forward_passes``.
    Returns a Series indexed by component string.
    """
    if ablator.metric == "kl":
        raise ParameterError(
            "attribution ranking needs a metric with a non-zero gradient (logit_diff or prob_diff), not kl"
        )
    if ig_steps < 1:
        raise ParameterError(f"ig_steps must be >= 1, got {ig_steps}")
    info = ablator.info
    components = list(info.components if components is None else components)
    for c in components:
        info.check(c)
    by_hook: dict[str, list[Component]] = {}
    for c in components:
        by_hook.setdefault(component_hook_name(c), []).append(c)
    names = sorted(by_hook)
    ablator.ensure_values(names)
    masks = {n: _component_mask(info, n, by_hook[n], ablator.seq_len, ablator.positions) for n in names}
    alphas = [0.0] if ig_steps == 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]
    ablation = ablator.hooks(list(ablated))  # run before the interpolators on the same hook points
    total: dict[str, torch.Tensor] = {}
    for alpha in alphas:
        probes: dict[str, torch.Tensor] = {}
        deltas: dict[str, torch.Tensor] = {}

        def interpolator(name: str, alpha=alpha):  # keyed by our name: the hook point may report its native alias
            def hook(act, hook=None):  # noqa: ARG001
                value = ablator.values[name].to(act)
                deltas[name] = (value - act).detach()  # the activation difference at this point
                # A zero-valued leaf added after interpolation: its gradient is d metric / d output,
                # the *total* effect (paths through later components stay in the graph).
                probes[name] = torch.zeros_like(act, requires_grad=True)
                out = act + alpha * masks[name].to(act) * (value - act) if alpha else act
                return out + probes[name]

            return hook

        with torch.enable_grad():
            logits = final_logits(
                ablator.model,
                ablator.tokens,
                batch_size=len(ablator.tokens),
                fwd_hooks=ablation + [(n, interpolator(n)) for n in names],
                grad=True,
            )
            grads = torch.autograd.grad(
                differentiable_metric(ablator, logits), [probes[n] for n in names], allow_unused=True
            )
        ablator.forward_passes += 2  # one forward, one backward
        for n, g in zip(names, grads):
            if g is not None:
                total[n] = total.get(n, 0) + deltas[n] * g / len(alphas)
            else:
                total.setdefault(n, torch.zeros_like(deltas[n]))
    out = {}
    for c in components:
        contrib = total[component_hook_name(c)]  # [batch, pos, ...]
        if ablator.positions is not None:
            contrib = contrib[:, ablator.positions]
        if c.kind == "head":
            val = contrib[:, :, c.index].sum()
        elif c.kind == "neuron":
            val = contrib[..., c.index].sum()
        else:
            val = contrib.sum()
        out[str(c)] = float(val)
    return pd.Series(out, name="attribution")
