import pytest
import torch

from seqcirc_utils.ablation import Ablator, circuit_score
from seqcirc_utils.circuits import discovery_dataset
from seqcirc_utils.pruning import attribution_scores, check_thresholds, fast_prune, order_study, sweep_prune
from seqcirc_utils.tasks import make_dataset
from seqcirc_utils.types import head


@pytest.fixture(scope="module")
def llama_ablator(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=4)
    return Ablator(model, info, ds)


def test_nested_thresholds_and_scores_rechecked_from_scratch(tiny_llama, llama_ablator):
    model, info = tiny_llama
    results = sweep_prune(llama_ablator, [0.8, 0.97, 0.9], progress=False)
    assert [r.threshold for r in results] == [0.97, 0.9, 0.8]
    for hi, lo in zip(results, results[1:]):
        assert lo.components <= hi.components
    fresh = Ablator(model, info, llama_ablator.dataset)  # new means, new full run
    for r in results:
        assert fresh.score(r.components).score >= r.threshold
        assert fresh.score(r.components).score == pytest.approx(r.score.score, abs=1e-6)


def test_resumed_sweep_equals_full_pass_sweep(llama_ablator):
    a = sweep_prune(llama_ablator, [0.9], resume=True, progress=False)[0]
    b = sweep_prune(llama_ablator, [0.9], resume=False, progress=False)[0]
    assert a.components == b.components


def test_same_parameters_same_circuit(tiny_llama):
    model, info = tiny_llama
    runs = []
    for _ in range(2):
        ds = make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=4)
        runs.append(sweep_prune(Ablator(model, info, ds), [0.85], progress=False)[0].components)
    assert runs[0] == runs[1]


def test_thresholds_validated():
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        check_thresholds([0.8, 1.5])
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        check_thresholds([0])


def test_attribution_matches_finite_difference(llama_ablator):
    """attr(c) is the derivative of the metric along act -> act + a (value - act) at a = 0."""
    ab = llama_ablator
    comps = [head(0, 1), head(1, 3)]
    attr = attribution_scores(ab, comps)
    from seqcirc_utils.ablation import _ablation_mask, component_hook_name
    from seqcirc_utils.forward import final_logits

    eps = 0.02  # central difference: error O(eps^2), well above float32 noise
    for c in comps:
        name = component_hook_name(c)
        mask = _ablation_mask(ab.info, name, [c], ab.seq_len, None)

        def metric_at(a, mask=mask, name=name):
            def nudge(act, hook):
                return torch.where(mask, act + a * (ab.values[name] - act), act)

            return ab.metric_value(final_logits(ab.model, ab.tokens, fwd_hooks=[(name, nudge)]))

        fd = (metric_at(eps) - metric_at(-eps)) / (2 * eps)
        assert attr[str(c)] == pytest.approx(fd, rel=3e-2, abs=1e-5)


def test_fast_method_meets_threshold(llama_ablator):
    res = fast_prune(llama_ablator, [0.9, 0.8], progress=False)
    assert res[1].components <= res[0].components
    for r in res:
        assert r.score.score >= r.threshold
        assert llama_ablator.score(r.components).score == pytest.approx(r.score.score)


def test_order_study_frequencies(llama_ablator):
    table, results = order_study(llama_ablator, 0.8, seeds=range(3), progress=False)
    assert len(results) == 3 and all(r.score.score >= 0.8 for r in results)
    for _, row in table.iterrows():
        expected = sum(row["component"] in {str(c) for c in r.components} for r in results) / 3
        assert row["survival"] == pytest.approx(expected)


def test_embedded_digits_circuit_at_80_percent(smollm):
    model, info = smollm
    ds = discovery_dataset(model, "smollm2-135m", "digits", template="pure", n=12, seed=0)
    result = sweep_prune(Ablator(model, info, ds), [0.8], progress=False)[0]
    assert 0 < len(result.components) < len(info.components)
    rescored = circuit_score(model, info, ds, circuit=result.components)
    assert rescored.score >= 0.8
    assert rescored.score == pytest.approx(result.score.score, abs=1e-4)


def test_neuron_attribution_matches_finite_difference(llama_ablator):
    """Neurons live on mlp.hook_post (values computed on demand); their attribution is the
    derivative of the metric along the path to the neuron's mean value."""
    from seqcirc_utils.ablation import _ablation_mask, component_hook_name
    from seqcirc_utils.forward import final_logits
    from seqcirc_utils.types import Component

    ab = llama_ablator
    layer = ab.info.n_layers - 1
    neurons = [Component(layer, "neuron", i) for i in range(ab.info.d_mlp)]
    attr = attribution_scores(ab, neurons)
    assert len(attr) == ab.info.d_mlp
    top = max(neurons, key=lambda n: abs(attr[str(n)]))
    name = component_hook_name(top)
    mask = _ablation_mask(ab.info, name, [top], ab.seq_len, None)

    def metric_at(a):
        def nudge(act, hook):
            return torch.where(mask, act + a * (ab.values[name] - act), act)

        return ab.metric_value(final_logits(ab.model, ab.tokens, fwd_hooks=[(name, nudge)]))

    eps = 0.02
    fd = (metric_at(eps) - metric_at(-eps)) / (2 * eps)
    assert attr[str(top)] == pytest.approx(fd, rel=3e-2, abs=1e-5)
