"""Node attribution (attribution patching, integrated gradients) and the differentiable metric.

Checked against independent computations on the tiny random Llama: finite differences along the
ablation path, and for integrated gradients the completeness identity (scores sum to the metric
change between the two endpoints), the endpoints computed with raw PyTorch hooks.
"""

import pytest
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import Component, head, mlp
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.scoring.attribution import attribution_scores, differentiable_metric
from seqcirc_utils.tasks.datasets import make_dataset


@pytest.fixture(scope="module")
def ablator(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=4)
    return Ablator(model, info, ds)


# --------------------------------------------------------------------------- independent reference


def _corrupted_means(model, tokens, names):
    """Per-position mean over the corrupted prompts of each hook's activation, via raw hooks."""
    acts = {}

    def grab(name):
        def hook(act, hook=None):
            acts[name] = act.detach().mean(0)
            return act

        return hook

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, grab(n)) for n in names]):
        model(tokens)
    return acts


def _raw_logit_diff(model, ds, ablated: list[Component]) -> float:
    """Mean logit difference with ``ablated`` heads / MLPs replaced by their corrupted means at every
    position, written directly with hooks (no Ablator, no package ablation code)."""
    layers = sorted({c.layer for c in ablated})
    names = [f"blocks.{l}.attn.hook_z" for l in layers] + [f"blocks.{l}.hook_mlp_out" for l in layers]
    device = next(model.parameters()).device
    means = _corrupted_means(model, ds.corrupted_tokens.to(device), names)
    hooks = []
    for l in layers:
        head_idx = [c.index for c in ablated if c.layer == l and c.kind == "head"]
        if head_idx:

            def z_hook(act, hook=None, l=l, head_idx=head_idx):
                act = act.clone()
                act[:, :, head_idx] = means[f"blocks.{l}.attn.hook_z"][None, :, head_idx].to(act)
                return act

            hooks.append((f"blocks.{l}.attn.hook_z", z_hook))
        if any(c.layer == l and c.kind == "mlp" for c in ablated):

            def mlp_hook(act, hook=None, l=l):
                return means[f"blocks.{l}.hook_mlp_out"][None].expand_as(act).to(act)

            hooks.append((f"blocks.{l}.hook_mlp_out", mlp_hook))
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(ds.tokens.to(device))[:, -1, :]
    rows = torch.arange(len(ds), device=device)
    ans, inc = ds.answer_ids.to(device), ds.incorrect_ids.to(device)
    return float((logits[rows, ans] - logits[rows, inc]).mean())


# --------------------------------------------------------------------------- integrated gradients


def test_ig_completeness_all_components(tiny_llama, ablator):
    """Summed IG scores of every head and MLP -> metric(all ablated) - metric(clean) as steps grow."""
    model, info = tiny_llama
    total = _raw_logit_diff(model, ablator.dataset, list(info.components)) - _raw_logit_diff(model, ablator.dataset, [])
    assert abs(total) > 1e-3  # the check below is not vacuous
    errors = {k: abs(float(attribution_scores(ablator, ig_steps=k).sum()) - total) for k in (1, 2, 8, 32)}
    assert errors[32] < 1e-2 * abs(total)
    # the midpoint rule's error shrinks about as 1/k^2 (float32 noise aside); plain attribution
    # (one step at the clean run) is far from complete
    assert errors[8] < errors[2] / 4 and errors[32] < errors[8] / 4 + 1e-6
    assert errors[1] > 10 * errors[32]


def test_ig_completeness_inside_a_circuit(tiny_llama, ablator):
    """A subset S attributed while other components stay ablated: the scores of S sum to
    metric(ablated + S) - metric(ablated); heads of the same layer outside S are not interpolated."""
    model, info = tiny_llama
    base = [head(0, 0), head(1, 2)]
    subset = [head(0, 1), head(0, 3), mlp(0), head(1, 1)]
    expected = _raw_logit_diff(model, ablator.dataset, base + subset) - _raw_logit_diff(model, ablator.dataset, base)
    attr = attribution_scores(ablator, subset, ig_steps=32, ablated=base)
    assert sorted(attr.index) == sorted(str(c) for c in subset)
    assert abs(expected) > 1e-3
    assert float(attr.sum()) == pytest.approx(expected, rel=1e-2)


def test_ig_counts_two_passes_per_step(ablator):
    p0 = ablator.forward_passes
    attribution_scores(ablator, ig_steps=5)
    assert ablator.forward_passes - p0 == 10


# --------------------------------------------------------------------------- plain attribution patching


def _path_metric(ab, c: Component, a: float) -> float:
    """Metric with ``c``'s activation moved a fraction ``a`` towards its ablation value (raw hook)."""
    name = {
        "head": f"blocks.{c.layer}.attn.hook_z",
        "mlp": f"blocks.{c.layer}.hook_mlp_out",
        "neuron": f"blocks.{c.layer}.mlp.hook_post",
    }[c.kind]

    def nudge(act, hook=None):
        value = ab.values[name].to(act)
        moved = act + a * (value - act)
        out = act.clone()
        if c.kind == "head":
            out[:, :, c.index] = moved[:, :, c.index]
        elif c.kind == "neuron":
            out[..., c.index] = moved[..., c.index]
        else:
            out = moved
        return out

    with torch.no_grad(), ab.model.hooks(fwd_hooks=[(name, nudge)]):
        logits = ab.model(ab.tokens)[:, -1, :]
    return ab.metric_value(logits)


def test_attribution_matches_finite_difference(ablator):
    """attr(c) is the derivative of the metric along act -> act + a (value - act) at a = 0."""
    comps = [head(0, 1), head(1, 3), mlp(1)]
    attr = attribution_scores(ablator, comps)
    eps = 0.02  # central difference: error O(eps^2), well above float32 noise
    for c in comps:
        fd = (_path_metric(ablator, c, eps) - _path_metric(ablator, c, -eps)) / (2 * eps)
        assert attr[str(c)] == pytest.approx(fd, rel=3e-2, abs=1e-5)


def test_neuron_attribution_matches_finite_difference(ablator):
    """Neurons live on mlp.hook_post (values computed on demand); their attribution is the
    derivative of the metric along the path to the neuron's mean value."""
    layer = ablator.info.n_layers - 1
    neurons = [Component(layer, "neuron", i) for i in range(ablator.info.d_mlp)]
    attr = attribution_scores(ablator, neurons)
    assert len(attr) == ablator.info.d_mlp
    top = max(neurons, key=lambda n: abs(attr[str(n)]))
    eps = 0.02
    fd = (_path_metric(ablator, top, eps) - _path_metric(ablator, top, -eps)) / (2 * eps)
    assert attr[str(top)] == pytest.approx(fd, rel=3e-2, abs=1e-5)


# --------------------------------------------------------------------------- the differentiable metric


def test_differentiable_metric_equals_the_ablators_metric(ablator):
    logits = ablator.full_logits.clone().requires_grad_(True)
    value = differentiable_metric(ablator, logits)
    assert value.dim() == 0 and value.requires_grad
    assert float(value.detach()) == pytest.approx(ablator.full_metric, rel=1e-6)
    (g,) = torch.autograd.grad(value, logits)
    rows = torch.arange(len(ablator.dataset))
    # d mean(logit[ans] - logit[inc]) / d logits: +1/n at the answer, -1/n at the incorrect token
    expected = torch.zeros_like(g)
    expected[rows, ablator.dataset.answer_ids.to(g.device)] += 1 / len(rows)
    expected[rows, ablator.dataset.incorrect_ids.to(g.device)] -= 1 / len(rows)
    assert torch.allclose(g, expected, atol=1e-7)


def test_kl_and_bad_steps_refused(tiny_llama, ablator):
    model, info = tiny_llama
    kl = Ablator(model, info, ablator.dataset, metric="kl")
    with pytest.raises(ParameterError, match="not kl"):
        attribution_scores(kl, [head(0, 0)])
    with pytest.raises(ParameterError, match="valid: logit_diff, prob_diff"):
        differentiable_metric(kl, kl.full_logits)
    with pytest.raises(ParameterError, match="ig_steps must be >= 1"):
        attribution_scores(ablator, [head(0, 0)], ig_steps=0)
