import pytest

from seqcirc_utils.core.config import FastConfig, SweepConfig, check_thresholds
from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery import pruning
from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.discovery.pruning import SWEEP_ORDERS, fast_prune, order_study, prune, sweep_prune
from seqcirc_utils.scoring.ablation import Ablator, circuit_score
from seqcirc_utils.tasks.datasets import make_dataset


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
    with pytest.raises(ParameterError, match=r"outside \(0, 1\]"):
        check_thresholds([0.8, 1.5])
    with pytest.raises(ParameterError, match=r"outside \(0, 1\]"):
        check_thresholds([0])


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


# --------------------------------------------------------------------------- sweep order


def _spy_candidates(monkeypatch, ab, threshold):
    """Record ``(candidate, removed)`` for each resumed scoring call, in call order.

    Each call scores the current circuit minus one candidate: its ablated set is the components
    removed so far plus the candidate. Whether the candidate was then removed follows from the
    call's own score (removed iff score >= threshold)."""
    tried, removed = [], set()
    original = ab.logits_from_layer

    def spy(layer, resid_pre, ablated, keep_residuals=False):
        logits, store = original(layer, resid_pre, ablated, keep_residuals)
        (candidate,) = set(ablated) - removed
        assert candidate.layer == layer
        passed = ab.fraction_of_full(ab.metric_value(logits)) >= threshold
        if passed:
            removed.add(candidate)
        tried.append((candidate, passed))
        return logits, store

    monkeypatch.setattr(ab, "logits_from_layer", spy)
    return tried


@pytest.mark.parametrize("order", SWEEP_ORDERS)
def test_sweep_tries_components_in_the_papers_order(tiny_llama, monkeypatch, order):
    """paper (find_circuit_backw / _forw): backward = layers last to first, MLP then heads 0..n-1;
    forward = layers first to last, heads 0..n-1 then MLP, over what the backward sweep kept.
    descending: the backward sweep takes heads n-1..0."""
    model, info = tiny_llama
    ab = Ablator(model, info, make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=4))
    threshold = 0.9
    events = _spy_candidates(monkeypatch, ab, threshold)
    result = sweep_prune(ab, [threshold], order=order, progress=False)[0]
    tried = [c for c, _ in events]
    removed = [c for c, passed in events if passed]
    heads = list(range(info.n_heads)) if order == "paper" else list(reversed(range(info.n_heads)))
    backward = []
    for layer in range(info.n_layers - 1, -1, -1):
        backward += [mlp(layer)] + [head(layer, h) for h in heads]
    removed_backward = {c for c, passed in events[: len(backward)] if passed}
    forward = [
        c
        for layer in range(info.n_layers)
        for c in [head(layer, h) for h in range(info.n_heads)] + [mlp(layer)]
        if c not in removed_backward
    ]
    assert tried == backward + forward
    assert 0 < len(removed_backward) < len(backward)  # both sweeps have work: the check is not vacuous
    assert result.order == order and result.minimal is None
    assert result.components == frozenset(info.components) - set(removed)
    assert result.removed_order == removed


def test_prune_dispatch_and_order_validation(llama_ablator):
    r = prune(llama_ablator, [0.9], method="sweep", progress=False)[0]
    assert r.order == "paper"
    descending = SweepConfig(order="descending")
    assert prune(llama_ablator, [0.9], method="sweep", sweep=descending, progress=False)[0].order == "descending"
    assert sweep_prune(llama_ablator, [0.9], order=[head(1, 0), mlp(0)], progress=False)[0].order == "custom"
    with pytest.raises(ParameterError, match="unknown sweep order 'nosuch'; valid: paper, descending"):
        prune(llama_ablator, [0.9], method="sweep", sweep=SweepConfig(order="nosuch"))
    with pytest.raises(ParameterError, match="apply to method='sweep' only"):
        prune(llama_ablator, [0.9], method="fast", sweep=SweepConfig())
    with pytest.raises(ParameterError, match="apply to method='fast' only"):
        prune(llama_ablator, [0.9], method="sweep", fast=FastConfig(minimal=False))
    with pytest.raises(ParameterError, match="unknown pruning method 'nosuch'; valid: sweep, fast"):
        prune(llama_ablator, [0.9], method="nosuch")


# --------------------------------------------------------------------------- minimal fast circuits


def _removable(ab, components, threshold):
    """Components whose single removal keeps the score >= threshold (full passes, from scratch)."""
    return {c for c in components if ab.score(set(components) - {c}).score >= threshold}


@pytest.mark.parametrize("thresholds", [(0.9, 0.8), (0.97, 0.7)])
def test_fast_circuits_are_one_minimal(tiny_llama, thresholds):
    model, info = tiny_llama
    ab = Ablator(model, info, make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=4))
    results = prune(ab, thresholds, method="fast", progress=False)
    fresh = Ablator(model, info, ab.dataset)  # new means, new full run
    for hi, lo in zip(results, results[1:]):
        assert lo.components <= hi.components
    for r in results:
        assert r.minimal is True and r.removable_left == 0 and r.order is None
        assert fresh.score(r.components).score >= r.threshold
        assert fresh.score(r.components).score == pytest.approx(r.score.score, abs=1e-6)
        assert _removable(fresh, r.components, r.threshold) == set()


def test_fast_without_refinement_is_not_checked(llama_ablator):
    r = fast_prune(llama_ablator, [0.8], minimal=False, progress=False)[0]
    assert r.minimal is None and r.removable_left == 0
    assert r.score.score >= 0.8


def test_budget_limited_refinement_reports_what_is_left(llama_ablator):
    """rounds=0 skips the prefix search, so the refinement starts from the full model."""
    ab, threshold = llama_ablator, 0.8
    everything = set(ab.info.components)
    left = _removable(ab, everything, threshold)
    assert left  # single removals from the full model that keep 80 %: the check is not vacuous
    r0 = fast_prune(ab, [threshold], rounds=0, max_refine_passes=0, progress=False)[0]
    assert r0.components == everything
    assert r0.minimal is False and r0.removable_left == len(left)
    r1 = fast_prune(ab, [threshold], rounds=0, max_refine_passes=1, progress=False)[0]
    left1 = _removable(ab, r1.components, threshold)
    assert r1.removable_left == len(left1) and r1.minimal is (not left1)
    full = fast_prune(ab, [threshold], rounds=0, progress=False)[0]
    assert full.minimal is True and _removable(ab, full.components, threshold) == set()
    with pytest.raises(ParameterError, match="max_refine_passes must be >= 0"):
        fast_prune(ab, [threshold], max_refine_passes=-1, progress=False)


def test_lower_threshold_starts_from_the_inherited_score(llama_ablator, monkeypatch):
    """The prefix search of a lower nested threshold starts from the circuit above and its score."""
    starts = []
    original = pruning.largest_passing_prefix

    def spy(score_at, n, threshold, start_score, guess=None):
        starts.append((threshold, n, start_score))
        return original(score_at, n, threshold, start_score, guess)

    monkeypatch.setattr(pruning, "largest_passing_prefix", spy)
    hi, lo = fast_prune(llama_ablator, [0.95, 0.8], rounds=1, progress=False)
    assert [t for t, _, _ in starts] == [0.95, 0.8]
    assert starts[0][1:] == (len(llama_ablator.info.components), 1.0)
    assert starts[1][1] == len(hi.components)
    assert starts[1][2] == pytest.approx(hi.score.score, abs=1e-9)
