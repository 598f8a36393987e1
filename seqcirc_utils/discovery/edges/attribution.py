"""Edge attribution patching (EAP, Syed et al. 2023) and EAP-IG (Hanna et al. 2024), grouped-query safe.

For an edge ``s -> (r, input)`` the exact effect of removing it (see :mod:`seqcirc_utils.discovery.edges.patching`)
is approximated to first order by

    attr(e) = sum_{batch, pos} delta_s . g_{r,input}

where ``delta_s = val_s - out_s`` ``[batch, pos, d_model]`` is the sender's residual change when
ablated and ``g_{r,input} = d metric / d (receiver's input)`` ``[batch, pos, d_model]``, the
gradient with respect to *that receiver input only*. The metric is the dataset mean (logit
difference, nats), so ``attr`` is the predicted metric change in nats (negative = the edge helps).

Receiver gradients, all from one forward and one backward pass (plus small local
vector-Jacobian products, no extra model passes):

- logits: the gradient at ``ln_final.hook_in``; MLP ``L``: at ``blocks.L.ln2.hook_in`` (these are
  the norms' inputs, separate from the residual stream);
- head ``(L, h)``: a zero probe ``p_L`` ``[batch, pos, d_model]`` is added at ``blocks.L.ln1.hook_in``
  (so q, k and v of layer ``L`` depend on it). With ``G_q, G_S, G_z`` the metric's gradients at
  ``hook_q``, ``hook_attn_scores`` and ``hook_z`` restricted to query head ``h``:
  ``g_q = vjp(q, p_L; G_q)``, ``g_k = vjp(k, p_L; vjp(scores, k; G_S))``,
  ``g_v = vjp(v, p_L; vjp(z, v; G_z))``. The inner products go through head ``h``'s scores/output
  only, so a key/value head shared by several query heads (grouped-query attention) gets one
  gradient per query head, which TransformerLens' own edge attribution refuses to compute.

**EAP-IG** (``ig_steps = k > 1``): the gradient is averaged over ``k`` points
``alpha = (i + 0.5) / k`` on the straight line from the node circuit (every edge present) to the
circuit with every edge removed; at ``alpha`` every circuit component's output is interpolated
``out + alpha (val - out)`` (the same as removing every edge with weight ``alpha``), and
``delta_s`` is taken at that point (integrated gradients in edge-mask space: the scores of all
edges sum to about the metric change of removing them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.stats import spearman
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.discovery.edges.patching import (
    HEAD_INPUTS,
    LOGITS,
    Edge,
    EdgePatcher,
    check_components,
    circuit_edges,
    head_output_weights,
    position_mask,
    sender_delta,
)
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.scoring.attribution import differentiable_metric


def _probe(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like, requires_grad=True)


def edge_attribution(
    ablator: Ablator,
    components: Iterable[Component],
    edges: Sequence[Edge] | None = None,
    ig_steps: int = 1,
    progress: bool = True,
) -> dict[Edge, float]:
    """Attribution of every edge of the node circuit ``components`` (or of ``edges``).

    Returns ``{edge: predicted metric change when the edge is removed}`` in the metric's units
    (logit difference, nats); divide by ``ablator.full_metric`` for a fraction of the full model.
    ``ig_steps=1``: plain EAP (1 forward + 1 backward pass); ``ig_steps=k``: EAP-IG (k of each).
    Counts 2 forward passes per step on ``ablator.forward_passes``.
    """
    if ablator.metric == "kl":
        raise ParameterError(
            "edge attribution needs a metric with a non-zero gradient (logit_diff or prob_diff), not kl"
        )
    if ig_steps < 1:
        raise ParameterError(f"ig_steps must be >= 1, got {ig_steps}")
    comps = check_components(ablator.info, components)
    edges = list(circuit_edges(ablator.info, comps) if edges is None else edges)
    for e in edges:
        for c in (e.sender, e.receiver):
            if c is not None and c not in comps:
                raise ParameterError(f"edge {e}: {c} is not in the node circuit")
    alphas = [0.0] if ig_steps == 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]
    total = {e: 0.0 for e in edges}
    for alpha in tqdm(alphas, desc="edge attribution", disable=not progress or len(alphas) == 1, leave=False):
        deltas, grads = _deltas_and_gradients(ablator, comps, edges, alpha)
        for e in edges:
            g = grads[(e.receiver, e.input)]
            total[e] += float((deltas[e.sender] * g).sum()) / len(alphas)
    return total


def edge_attribution_node_sums(
    ablator: Ablator, components: Iterable[Component], ig_steps: int = 1, progress: bool = False
) -> dict[Component, float]:
    """Per node of ``components``, the sum of :func:`edge_attribution` over every edge it sends or receives
    (every edge of the node circuit), without scoring the edges one by one.

    The same gradients and deltas (:func:`_deltas_and_gradients`, same passes); an edge's score is
    ``delta_s . g_r``, so a sender's sum is ``delta_s . (sum of its receivers' g_r)`` and a receiver's is
    ``(sum of its senders' delta_s) . g_r``, both from running sums over the senders in forward order (a
    receiver's senders are every node upstream of it). Equals the edge-by-edge sum up to float rounding.
    """
    if ablator.metric == "kl":
        raise ParameterError(
            "edge attribution needs a metric with a non-zero gradient (logit_diff or prob_diff), not kl"
        )
    if ig_steps < 1:
        raise ParameterError(f"ig_steps must be >= 1, got {ig_steps}")
    comps = check_components(ablator.info, components)
    edges = circuit_edges(ablator.info, comps)
    order = sort_components(comps)
    where = {c: i for i, c in enumerate(order)}
    senders_of: dict[tuple[Component | None, str], set[int]] = {}
    for e in edges:
        senders_of.setdefault((e.receiver, e.input), set()).add(where[e.sender])
    prefix = {key: len(idx) for key, idx in senders_of.items()}
    if any(idx != set(range(prefix[key])) for key, idx in senders_of.items()):
        raise AssertionError("a receiver's senders are not the nodes before it in forward order")
    alphas = [0.0] if ig_steps == 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]
    total = {c: 0.0 for c in order}
    for alpha in tqdm(alphas, desc="edge attribution", disable=not progress or len(alphas) == 1, leave=False):
        deltas, grads = _deltas_and_gradients(ablator, comps, edges, alpha)
        stacked = torch.stack([deltas[c] for c in order])  # [n, batch, pos, d_model]
        upstream = torch.cat([torch.zeros_like(stacked[:1]), stacked.cumsum(0)])  # [n + 1, ...]: sum of the first k
        last = torch.zeros_like(stacked)  # [j]: sum of g over receivers whose last sender is node j
        for key, k in prefix.items():
            g = grads[key]
            if k:
                last[k - 1] += g
            if key[0] is not None:
                total[key[0]] += float((upstream[k] * g).sum()) / len(alphas)
        downstream = last.flip(0).cumsum(0).flip(0)  # [i]: sum of g over the receivers node i sends to
        for i, c in enumerate(order):
            total[c] += float((stacked[i] * downstream[i]).sum()) / len(alphas)
    return total


def _deltas_and_gradients(
    ablator: Ablator, comps: frozenset[Component], edges: Sequence[Edge], alpha: float
) -> tuple[dict[Component, torch.Tensor], dict[tuple[Component | None, str], torch.Tensor]]:
    """One forward + backward at interpolation ``alpha``: sender deltas and receiver-input gradients,
    each ``[batch, pos, d_model]``."""
    info, model = ablator.info, ablator.model
    device = ablator.tokens.device
    pos_mask = position_mask(ablator, device)
    ablated = [c for c in info.components if c not in comps]
    heads_by_layer: dict[int, list[int]] = {}
    for c in comps:
        if c.is_head:
            heads_by_layer.setdefault(c.layer, []).append(c.index)
    w_o = head_output_weights(model, info, heads_by_layer)
    receivers = {(e.receiver, e.input) for e in edges}
    head_layers = sorted({r.layer for r, _ in receivers if r is not None and r.is_head})
    mlp_layers = sorted({r.layer for r, _ in receivers if r is not None and r.is_mlp})

    probes: dict[str, torch.Tensor] = {}
    saved: dict[str, torch.Tensor] = {}
    deltas: dict[Component, torch.Tensor] = {}

    def add_probe(key: str):
        def hook(act, hook=None):  # noqa: ARG001
            probes[key] = _probe(act)
            saved[key] = act + probes[key]
            return saved[key]

        return hook

    def keep(key: str):
        def hook(act, hook=None):  # noqa: ARG001
            saved[key] = act
            return act

        return hook

    def z_hook(layer: int):
        name = get_act_name("z", layer)
        heads = sorted(heads_by_layer.get(layer, []))
        mask = torch.zeros(info.n_heads, 1, device=device)
        mask[heads] = 1.0

        def hook(act, hook=None):  # noqa: ARG001
            if layer in head_layers:  # the gradient at z (before interpolation) for v receivers
                probes[f"z{layer}"] = _probe(act)
                act = act + probes[f"z{layer}"]
                saved[f"z{layer}"] = act
            value = ablator.values[name].to(act)
            for h in heads:
                deltas[Component(layer, "head", h)] = sender_delta(
                    Component(layer, "head", h), act.detach(), value, w_o[layer], pos_mask
                )
            if alpha:
                act = act + alpha * (value - act) * mask * pos_mask[:, :, None].to(act)
            return act

        return hook

    def mlp_hook(layer: int):
        name = get_act_name("mlp_out", layer)

        def hook(act, hook=None):  # noqa: ARG001
            value = ablator.values[name]
            deltas[Component(layer, "mlp")] = sender_delta(Component(layer, "mlp"), act.detach(), value, None, pos_mask)
            if alpha:  # interpolate in the graph (not with the detached delta): d out / d act = 1 - alpha
                act = act + alpha * sender_delta(Component(layer, "mlp"), act, value, None, pos_mask)
            return act

        return hook

    hooks = list(ablator.hooks(ablated))
    for layer in range(info.n_layers):
        if layer in head_layers:
            hooks += [
                (get_act_name("in", layer, "ln1"), add_probe(f"ln1_{layer}")),
                (get_act_name("q", layer), add_probe(f"q{layer}")),
                (get_act_name("k", layer), keep(f"k{layer}")),
                (get_act_name("v", layer), keep(f"v{layer}")),
                (get_act_name("attn_scores", layer), add_probe(f"s{layer}")),
            ]
        if layer in head_layers or layer in heads_by_layer:
            hooks.append((get_act_name("z", layer), z_hook(layer)))
        if layer in mlp_layers:
            hooks.append((get_act_name("in", layer, "ln2"), add_probe(f"mlp{layer}")))
        if Component(layer, "mlp") in comps:
            hooks.append((get_act_name("mlp_out", layer), mlp_hook(layer)))
    if (None, LOGITS) in receivers:
        hooks.append(("ln_final.hook_in", add_probe(LOGITS)))

    with torch.enable_grad():
        with model.hooks(fwd_hooks=hooks):
            logits = model(ablator.tokens, logits_to_keep=1, use_cache=False)[:, -1, :]
        metric = differentiable_metric(ablator, logits)
        keys = [k for k in probes if not k.startswith("ln1_")]
        grads = dict(
            zip(keys, torch.autograd.grad(metric, [probes[k] for k in keys], retain_graph=True, allow_unused=True))
        )
        out: dict[tuple[Component | None, str], torch.Tensor] = {}
        for r, x in receivers:
            if r is None:
                out[(r, x)] = _or_zeros(grads[LOGITS], probes[LOGITS])
            elif r.is_mlp:
                out[(r, x)] = _or_zeros(grads[f"mlp{r.layer}"], probes[f"mlp{r.layer}"])
            else:
                out[(r, x)] = _head_input_gradient(r, x, grads, saved, probes)
    ablator.forward_passes += 2
    return deltas, out


def _or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def _vjp(output: torch.Tensor, wrt: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(output, wrt, grad_outputs=grad_output, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def _head_input_gradient(r: Component, x: str, grads: dict, saved: dict, probes: dict) -> torch.Tensor:
    """d metric / d (head ``r``'s ``x`` input) ``[batch, pos, d_model]`` via head-restricted vjps."""
    layer, h = r.layer, r.index
    p = probes[f"ln1_{layer}"]
    if x == "q":
        g = _or_zeros(grads[f"q{layer}"], probes[f"q{layer}"])
        only = torch.zeros_like(g)
        only[:, :, h] = g[:, :, h]
        return _vjp(saved[f"q{layer}"], p, only)
    if x == "k":
        g = _or_zeros(grads[f"s{layer}"], probes[f"s{layer}"])  # [batch, n_heads, q, k]
        only = torch.zeros_like(g)
        only[:, h] = g[:, h]
        g_k = _vjp(saved[f"s{layer}"], saved[f"k{layer}"], only)
        return _vjp(saved[f"k{layer}"], p, g_k)
    if x == "v":
        g = _or_zeros(grads[f"z{layer}"], probes[f"z{layer}"])  # [batch, pos, n_heads, d_head]
        only = torch.zeros_like(g)
        only[:, :, h] = g[:, :, h]
        g_v = _vjp(saved[f"z{layer}"], saved[f"v{layer}"], only)
        return _vjp(saved[f"v{layer}"], p, g_v)
    raise ParameterError(f"head input {x!r}; valid: {', '.join(HEAD_INPUTS)}")


def eap_vs_exact(
    ablator: Ablator,
    components: Iterable[Component],
    edges: Sequence[Edge] | None = None,
    ig_steps: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Rank agreement of edge attribution with exact path patching on the same edges.

    Returns ``(table, summary)``: the table has ``sender, receiver, input, exact`` (score change
    when the edge alone is removed, fraction of full), ``attribution`` (the predicted change, same
    units); the summary has ``spearman``, ``pearson``, ``n_edges``, ``ig_steps``, ``forward_passes``.
    """
    import time

    t0, p0 = time.perf_counter(), ablator.forward_passes
    patcher = EdgePatcher(ablator, components)
    edges = list(circuit_edges(ablator.info, patcher.components) if edges is None else edges)
    attr = edge_attribution(ablator, patcher.components, edges, ig_steps=ig_steps, progress=progress)
    base = patcher.baseline_score()
    zero = ablator.fraction_of_full(0.0)
    rows = []
    for e in tqdm(edges, desc="exact path patching", disable=not progress, leave=False):
        d = e.to_dict()
        del d["score"]
        rows.append(
            {**d, "exact": patcher.score({e: 1.0}) - base, "attribution": ablator.fraction_of_full(attr[e]) - zero}
        )
    table = pd.DataFrame(rows, columns=["sender", "receiver", "input", "exact", "attribution"])
    summary = {
        "spearman": spearman(table["exact"], table["attribution"]),
        "pearson": float(table["exact"].corr(table["attribution"])),
        "n_edges": len(edges),
        "ig_steps": ig_steps,
        "forward_passes": ablator.forward_passes - p0,
        "seconds": time.perf_counter() - t0,
    }
    return table, summary
