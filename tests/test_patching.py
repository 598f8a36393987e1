"""Edge path patching and edge attribution (EAP / EAP-IG); edge pruning is tested in test_edge_pruning.py.

The exact path patching is checked against an independent brute-force computation written here
with raw PyTorch hooks on the plain Hugging Face modules inside the bridge (no TransformerLens hook
points): attention recomputed by hand (projections, rotary, causal softmax, grouped-query sharing).
"""

import math

import pytest
import torch
from conftest import all_but_one_head, hook_registry

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.edges import patching
from seqcirc_utils.discovery.edges.attribution import _deltas_and_gradients, eap_vs_exact, edge_attribution
from seqcirc_utils.discovery.edges.patching import Edge, EdgePatcher, circuit_edges, edge, path_patch_edge
from seqcirc_utils.scoring.ablation import Ablator

# --------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_thread")


def _circuit(info):
    return all_but_one_head(info)


# --------------------------------------------------------------------------- brute force


def _raw(module):
    return getattr(module, "_original_component", module)


def _o_proj(model, layer):
    return _raw(model.blocks[layer].attn.o)


def _o_weight(model, info, layer) -> torch.Tensor:
    """``[n_heads * d_head, d_model]`` from the raw HF weight (Conv1D stores [in, out], Linear [out, in])."""
    o = _o_proj(model, layer)
    return o.weight.T if isinstance(o, torch.nn.Linear) else o.weight


def _hf_layer(model, layer):
    hf = model.original_model
    return hf.transformer.h[layer] if hasattr(hf, "transformer") else hf.model.layers[layer]


def _is_gpt2(model) -> bool:
    return hasattr(model.original_model, "transformer")


def _norms(model, layer):
    lyr = _hf_layer(model, layer)
    if _is_gpt2(model):
        return _raw(lyr.ln_1), _raw(lyr.ln_2)
    return _raw(lyr.input_layernorm), _raw(lyr.post_attention_layernorm)


def _final_norm(model):
    hf = model.original_model
    return _raw(hf.transformer.ln_f if hasattr(hf, "transformer") else hf.model.norm)


def _qkv_by_hand(model, info, layer, x):
    """q ``[b, n_heads, pos, d_head]``, k/v ``[b, n_kv, pos, d_head]`` from normalised ``x`` (rotary applied)."""
    b, p, _ = x.shape
    lyr = _hf_layer(model, layer)
    if _is_gpt2(model):  # GPT-2: fused Conv1D c_attn
        c = _raw(_raw(_raw(lyr).attn).c_attn)
        qkv = x @ c.weight + c.bias
        q, k, v = qkv.split(info.d_model, dim=-1)
    else:
        att = _raw(_raw(lyr).self_attn)
        q, k, v = (_raw(att.q_proj)(x), _raw(att.k_proj)(x), _raw(att.v_proj)(x))
    q = q.view(b, p, info.n_heads, info.d_head).transpose(1, 2)
    k = k.view(b, p, info.n_kv_heads, info.d_head).transpose(1, 2)
    v = v.view(b, p, info.n_kv_heads, info.d_head).transpose(1, 2)
    if not _is_gpt2(model):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rot = _raw(model.original_model.model.rotary_emb)
        cos, sin = rot(x, torch.arange(p)[None].expand(b, p))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def _head_z_by_hand(model, info, layer, h, resid_q, resid_k, resid_v):
    """Query head ``h``'s output ``[b, pos, d_head]`` with q, k, v read from three residuals."""
    ln1, _ = _norms(model, layer)
    g = info.kv_head_of(h)
    q = _qkv_by_hand(model, info, layer, ln1(resid_q))[0][:, h]
    k = _qkv_by_hand(model, info, layer, ln1(resid_k))[1][:, g]
    v = _qkv_by_hand(model, info, layer, ln1(resid_v))[2][:, g]
    scores = q @ k.transpose(-1, -2) / math.sqrt(info.d_head)
    p = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(p, p, dtype=torch.bool), 1), float("-inf"))
    return scores.softmax(-1) @ v


def _brute_force_metric(ab: Ablator, comps, e: Edge) -> tuple[float, torch.Tensor]:
    """Two runs with raw torch hooks: (1) the node circuit, caching the sender's output and the
    receiver's residual input; (2) the node circuit with the sender's change added to the
    receiver's input only. Returns (metric, final logits)."""
    model, info = ab.model, ab.info
    d_head = info.d_head
    handles = []
    cache = {}

    def ablate_heads_pre(layer, replace_z=None):
        val = ab.values[f"blocks.{layer}.attn.hook_z"]  # [pos, n_heads, d_head]

        def pre(mod, args):
            x = args[0].clone()
            if layer == e.sender.layer and e.sender.is_head:
                cache["z"] = x[..., e.sender.index * d_head : (e.sender.index + 1) * d_head].clone()
            for h in range(info.n_heads):
                if head(layer, h) not in comps:
                    x[..., h * d_head : (h + 1) * d_head] = val[:, h]
            if replace_z is not None:
                hh, z = replace_z
                x[..., hh * d_head : (hh + 1) * d_head] = z
            return (x,)

        return pre

    def ablate_mlp(layer):
        val = ab.values[f"blocks.{layer}.hook_mlp_out"]

        def post(mod, args, out):
            if layer == e.sender.layer and e.sender.is_mlp:
                cache["mlp"] = out.clone()
            return val.expand_as(out).clone() if mlp(layer) not in comps else out

        return post

    def keep_resid(layer):  # the block's input = resid_pre; o_proj's output = the attention layer's output
        def pre(mod, args, kwargs):
            cache[f"resid{layer}"] = (args[0] if args else kwargs["hidden_states"]).clone()

        def post(mod, args, out):
            cache[f"attn_out{layer}"] = out.clone()

        return pre, post

    def keep_final(mod, args, out):
        cache["resid_final"] = (out[0] if isinstance(out, tuple) else out).clone()

    def replace_input(x_new):
        return lambda mod, args: (x_new,)

    def register(replace_z=None, replace_inputs=()):
        for layer in range(info.n_layers):
            rz = replace_z if replace_z and replace_z[0] == layer else None
            handles.append(
                _o_proj(model, layer).register_forward_pre_hook(ablate_heads_pre(layer, rz[1:] if rz else None))
            )
            handles.append(_raw(model.blocks[layer].mlp.out).register_forward_hook(ablate_mlp(layer)))
            pre, post = keep_resid(layer)
            handles.append(model.blocks[layer].register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(_o_proj(model, layer).register_forward_hook(post))
        handles.append(model.blocks[info.n_layers - 1].register_forward_hook(keep_final))
        for module, x_new in replace_inputs:  # a receiver's first linear maps read a hand-normalised input
            handles.append(module.register_forward_pre_hook(replace_input(x_new)))

    def run():
        try:
            with torch.no_grad():
                return model.original_model(ab.tokens, use_cache=False).logits[:, -1, :]
        finally:
            for hd in handles:
                hd.remove()
            handles.clear()

    register()
    logits_circuit = run()
    s = e.sender
    if s.is_head:
        val = ab.values[f"blocks.{s.layer}.attn.hook_z"][:, s.index]
        w = _o_weight(model, info, s.layer)[s.index * d_head : (s.index + 1) * d_head]
        delta = (val - cache["z"]) @ w
    else:
        delta = ab.values[f"blocks.{s.layer}.hook_mlp_out"] - cache["mlp"]
    r = e.receiver
    if r is None:  # lm_head reads ln_f(resid_final + delta)
        x_new = _final_norm(model)(cache["resid_final"] + delta)
        register(replace_inputs=[(_raw(model.original_model.lm_head), x_new)])
    elif r.is_mlp:  # the MLP's input projections read ln2(resid_mid + delta)
        resid_mid = cache[f"resid{r.layer}"] + cache[f"attn_out{r.layer}"]
        x_new = _norms(model, r.layer)[1](resid_mid + delta)
        block_mlp = model.blocks[r.layer].mlp
        firsts = [_raw(block_mlp._modules["in"])] + ([_raw(block_mlp.gate)] if hasattr(block_mlp, "gate") else [])
        register(replace_inputs=[(m, x_new) for m in firsts])
    else:  # the receiver head's attention by hand, its q, k or v read from resid + delta
        resid = cache[f"resid{r.layer}"]
        inputs = {x: resid + delta if x == e.input else resid for x in ("q", "k", "v")}
        z = _head_z_by_hand(model, info, r.layer, r.index, inputs["q"], inputs["k"], inputs["v"])
        register(replace_z=(r.layer, r.index, z))
    logits = run()
    assert ab.metric_value(logits_circuit) == pytest.approx(ab.score(comps).circuit_metric, rel=1e-4, abs=1e-5)
    return ab.metric_value(logits), logits


EDGES = [
    ("L0.H2", "L1.H1", "k"),  # head -> head key (grouped-query: L1.H1 shares its kv head with L1.H0)
    ("L0.H3", "L1.H0", "v"),  # head -> head value
    ("L0.H0", "L1.H3", "q"),  # head -> head query
    ("MLP0", "L1.H2", "k"),  # MLP -> head
    ("L0.H2", "MLP0", "mlp"),  # head -> MLP of the same layer
    ("L0.H3", "MLP1", "mlp"),  # head -> MLP of a later layer (non-adjacent path through block 1's residual)
    ("MLP0", "MLP1", "mlp"),  # MLP -> MLP
    ("L0.H0", "logits", None),  # non-adjacent: layer 0 straight to the logits, skipping layer 1
    ("MLP1", "logits", None),
]


@pytest.mark.parametrize("which", ["gpt2_ab", "llama_ab"])
@pytest.mark.parametrize("spec", EDGES, ids=[f"{s}->{r}.{x}" for s, r, x in EDGES])
def test_single_edge_matches_brute_force(request, which, spec):
    ab = request.getfixturevalue(which)
    comps = _circuit(ab.info)
    e = edge(*spec)
    expected, expected_logits = _brute_force_metric(ab, comps, e)
    patcher = EdgePatcher(ab, comps)
    logits = patcher.logits({e: 1.0})
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    got = path_patch_edge(ab, comps, *spec)
    assert got == pytest.approx(ab.fraction_of_full(expected), rel=1e-4, abs=1e-5)
    assert got != pytest.approx(patcher.baseline_score(), abs=1e-7)  # the edge does something


def test_hand_attention_reproduces_model(tiny_llama, llama_ab):
    """Guard for the brute force itself: hand-computed z equals the model's hook_z (GQA, rotary)."""
    model, info = tiny_llama
    _, cache = model.run_with_cache(
        llama_ab.tokens, names_filter=lambda n: n in {"blocks.1.attn.hook_z", "blocks.1.hook_resid_pre"}
    )
    resid = cache["blocks.1.hook_resid_pre"]
    for h in range(info.n_heads):
        z = _head_z_by_hand(model, info, 1, h, resid, resid, resid)
        torch.testing.assert_close(z, cache["blocks.1.attn.hook_z"][:, :, h], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["gpt2_ab", "llama_ab"])
def test_removing_every_outgoing_edge_equals_node_ablation(request, which):
    ab = request.getfixturevalue(which)
    comps = _circuit(ab.info)
    patcher = EdgePatcher(ab, comps)
    edges = circuit_edges(ab.info, comps)
    for s in [head(0, 2), mlp(0), head(1, 3)]:
        out = [e for e in edges if e.sender == s]
        assert patcher.score(out) == pytest.approx(ab.score(comps - {s}).score, abs=1e-5)


def test_edges_are_upstream_and_complete(tiny_llama):
    _, info = tiny_llama
    edges = circuit_edges(info, info.components)
    heads, mlps = info.n_layers * info.n_heads, info.n_layers
    assert all(patching.is_upstream(e.sender, e.receiver) for e in edges)
    assert len({(e.sender, e.receiver, e.input) for e in edges}) == len(edges)
    assert sum(e.receiver is None for e in edges) == heads + mlps
    # logits come first, the layer-0 receivers last
    assert edges[0].receiver is None and edges[-1].receiver.layer == 0


def test_bad_edges_raise_with_valid_values(gpt2_ab):
    comps = _circuit(gpt2_ab.info)
    with pytest.raises(ParameterError, match="valid: q, k, v"):
        path_patch_edge(gpt2_ab, comps, "L0.H0", "L1.H0", "z")
    with pytest.raises(ParameterError, match="not upstream"):
        path_patch_edge(gpt2_ab, comps, "L1.H0", "L0.H2", "q")
    with pytest.raises(ParameterError, match="not upstream"):
        path_patch_edge(gpt2_ab, comps, "MLP1", "MLP1")
    with pytest.raises(ParameterError, match="not in the node circuit"):
        path_patch_edge(gpt2_ab, comps, "L0.H1", "logits")


# --------------------------------------------------------------------------- hooks


def _hookpoint_hooks(model) -> int:
    from transformer_lens.hook_points import HookPoint

    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules() if isinstance(m, HookPoint))


def test_no_hook_left_behind_even_on_error(tiny_llama, llama_ab, monkeypatch):
    model, info = tiny_llama
    before = hook_registry(model)
    comps = _circuit(info)
    edges = circuit_edges(info, comps)
    EdgePatcher(ab := llama_ab, comps).score(edges)  # every kind of receiver, side runs included
    edge_attribution(ab, comps, edges, ig_steps=2, progress=False)
    assert hook_registry(model) == before
    assert _hookpoint_hooks(model) == 0

    calls = {"n": 0}
    real = patching.sender_delta

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom inside a hook")
        return real(*args, **kwargs)

    monkeypatch.setattr(patching, "sender_delta", failing)
    with pytest.raises(RuntimeError, match="boom"):
        EdgePatcher(ab, comps).score(edges)
    import seqcirc_utils.discovery.edges.attribution as ea

    calls["n"] = 0
    monkeypatch.setattr(ea, "sender_delta", failing)
    with pytest.raises(RuntimeError, match="boom"):
        edge_attribution(ab, comps, edges, progress=False)
    assert hook_registry(model) == before
    assert _hookpoint_hooks(model) == 0
    monkeypatch.undo()
    # and the model still computes the unhooked output
    ab.score(info.components)


# --------------------------------------------------------------------------- EAP


@pytest.mark.parametrize("which", ["gpt2_ab", "llama_ab"])
def test_eap_matches_finite_differences(request, which):
    """EAP's score of an edge is the derivative of the metric in the edge's removal weight."""
    ab = request.getfixturevalue(which)
    comps = _circuit(ab.info)
    patcher = EdgePatcher(ab, comps)
    edges = [edge(*s) for s in EDGES]
    attr = edge_attribution(ab, comps, edges, progress=False)
    eps = 1e-2
    for e in edges:
        fd = (patcher.metric({e: eps}) - patcher.metric({e: -eps})) / (2 * eps)
        assert attr[e] == pytest.approx(fd, rel=2e-2, abs=2e-5), str(e)


def test_eap_ig_gradients_at_interpolation_and_completeness(llama_ab):
    ab = llama_ab
    comps = _circuit(ab.info)
    patcher = EdgePatcher(ab, comps)
    edges = circuit_edges(ab.info, comps)
    alpha, eps = 0.5, 1e-2
    deltas, grads = _deltas_and_gradients(ab, frozenset(comps), edges, alpha)
    at = {e: alpha for e in edges}
    for e in [edge(*s) for s in EDGES]:
        fd = (patcher.metric({**at, e: alpha + eps}) - patcher.metric({**at, e: alpha - eps})) / (2 * eps)
        a = float((deltas[e.sender] * grads[(e.receiver, e.input)]).sum())
        assert a == pytest.approx(fd, rel=2e-2, abs=2e-5), str(e)
    # integrated gradients: the edge scores add up to the effect of removing every edge
    ig = edge_attribution(ab, comps, edges, ig_steps=8, progress=False)
    total = patcher.metric(edges) - patcher.metric({})
    assert sum(ig.values()) == pytest.approx(total, rel=5e-2, abs=1e-4)


@pytest.mark.parametrize("which", ["gpt2_ab", "llama_ab"])
def test_eap_rank_agrees_with_exact(request, which):
    ab = request.getfixturevalue(which)
    table, summary = eap_vs_exact(ab, _circuit(ab.info), progress=False)
    assert len(table) == summary["n_edges"] > 20
    assert summary["spearman"] > 0.5
