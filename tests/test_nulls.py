"""Null distributions: matched draws keep per-layer counts, batched scoring equals the Ablator, the summary
against brute force, and a planted circuit above its whole null."""

from __future__ import annotations

import pytest
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.evaluation import nulls
from seqcirc_utils.evaluation import planted as P
from seqcirc_utils.scoring.ablation import Ablator


@pytest.fixture(scope="module")
def pm():
    return P.build_planted_model()


@pytest.fixture(scope="module")
def ab(pm):
    return Ablator(pm.model, pm.info, P.planted_dataset(pm, n=16, seed=0), mode="mean", metric="logit_diff")


def test_summary_against_brute_force():
    null = [0.1, 0.5, 0.5, 0.9, 0.3, 0.7, 0.5, 0.2, 1.0, 0.4]
    for observed in (0.5, 0.95, 2.0, -1.0):
        s = nulls.null_summary(observed, null)
        ge = sum(1 for v in null if v >= observed)
        lt = sum(1 for v in null if v < observed)
        eq = sum(1 for v in null if v == observed)
        assert s["p_value"] == pytest.approx((1 + ge) / (len(null) + 1))
        assert s["observed_percentile"] == pytest.approx(100 * (lt + eq / 2) / len(null))
        ordered = sorted(null)  # linear interpolation between order statistics, by hand
        for q, key in [(5, "null_p5"), (50, "null_p50"), (95, "null_p95")]:
            pos = q / 100 * (len(null) - 1)
            lo = int(pos)
            want = ordered[lo] + (pos - lo) * (ordered[min(lo + 1, len(null) - 1)] - ordered[lo])
            assert s[key] == pytest.approx(want)
        assert s["null_mean"] == pytest.approx(sum(null) / len(null)) and s["n_draws"] == len(null)
    assert nulls.null_summary(2.0, null)["p_value"] == pytest.approx(1 / 11)  # above everything: p = 1 / (n + 1)


def test_lower_tail_p_against_brute_force():
    null = [0.5, 0.2, 0.9, 0.2, 0.7, 0.1]
    for observed in (0.05, 0.2, 0.6, 1.0):
        record = NullDistribution(
            statistic="score",
            observed=observed,
            n_draws=len(null),
            null=null,
            circuit=[],
            matched={},
            seed=0,
            **{k: v for k, v in nulls.null_summary(observed, null).items() if k != "n_draws"},
        )
        brute = (1 + sum(1 for v in null if v <= observed)) / (len(null) + 1)
        assert nulls.lower_tail_p(record) == pytest.approx(brute)
    assert nulls.lower_tail_p(record) == 1.0  # above every draw: no evidence of a larger drop than random


def test_matched_draws_keep_per_layer_counts(tiny_llama):
    _, info = tiny_llama
    circuit = [head(0, 0), head(0, 2), head(1, 3), mlp(0), mlp(1)]
    draws = nulls.matched_random_circuits(info, circuit, n_draws=40, seed=3)
    assert len(draws) == 40 and len(set(draws)) > 5
    for d in draws:
        assert nulls.heads_per_layer(d) == nulls.heads_per_layer(circuit) == {0: 2, 1: 1}
        mlps = sorted(c.layer for c in d if c.is_mlp)
        assert len(mlps) == 2 and len(set(mlps)) == 2
    assert draws == nulls.matched_random_circuits(info, circuit, n_draws=40, seed=3)  # seeded
    assert draws != nulls.matched_random_circuits(info, circuit, n_draws=40, seed=4)
    others = nulls.matched_random_circuits(info, [head(0, 0), head(1, 3)], n_draws=20, seed=0, exclude_own=True)
    assert all(not (d & {head(0, 0), head(1, 3)}) and nulls.heads_per_layer(d) == {0: 1, 1: 1} for d in others)
    with pytest.raises(ParameterError, match="n_draws"):
        nulls.matched_random_circuits(info, circuit, n_draws=0)


def test_mlps_drawn_within_the_window(tiny_gpt2):
    _, info = tiny_gpt2
    last = info.n_layers - 1
    for d in nulls.matched_random_circuits(info, [mlp(last)], n_draws=30, seed=1):
        (m,) = d
        assert abs(m.layer - last) <= 1
    zero_window = nulls.matched_random_circuits(info, [mlp(0), head(0, 1)], n_draws=5, seed=1, mlp_window=0)
    assert all(mlp(0) in d for d in zero_window)


@pytest.mark.parametrize("mode", ["mean", "resample"])
@pytest.mark.parametrize("draws_per_pass", [3, None])  # None: as many circuits a call as fill TOKENS_PER_PASS tokens
def test_batched_scoring_equals_one_circuit_at_a_time(pm, mode, draws_per_pass):
    ab = Ablator(pm.model, pm.info, P.planted_dataset(pm, n=8, seed=1), mode=mode)
    sets = nulls.matched_random_circuits(pm.info, pm.planted, 6, seed=2) + [pm.planted, frozenset()]
    passes = ab.forward_passes
    batched = nulls.circuit_metric_values(ab, sets, draws_per_pass=draws_per_pass)
    assert ab.forward_passes - passes == len(sets)  # one prompt-batch pass per circuit
    one_by_one = torch.stack([ab.score_parts(k)[0] for k in sets])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_circuits_per_call_fills_the_tokens():
    assert nulls.circuits_per_call(4 * 9, tokens_per_pass=256) == 7  # 4 prompts of 9 tokens
    assert nulls.circuits_per_call(3 * 9, tokens_per_pass=256) == 9
    assert nulls.circuits_per_call(10 * 18, tokens_per_pass=256) == 1  # more than half the target: one a call
    assert nulls.circuits_per_call(24 * 34, tokens_per_pass=256) == 1
    with pytest.raises(ParameterError, match="at least one prompt token"):
        nulls.circuits_per_call(0)


@pytest.mark.parametrize("mode", ["mean", "resample"])
def test_circuits_that_keep_the_first_layers_resume_above_them(pm, mode):
    """Circuits that ablate nothing below layer 1 start from the clean residual stream there: the same per-prompt
    metrics as full passes (score_parts), one counted pass per circuit plus two once per ablator."""
    ab = Ablator(pm.model, pm.info, P.planted_dataset(pm, n=8, seed=1), mode=mode)
    upper = [c for c in pm.info.components if c.layer >= 1]
    assert upper and any(c.layer == 0 for c in pm.info.components)
    sets = [frozenset(pm.info.components) - {c} for c in upper[:4]] + [frozenset(pm.info.components) - set(upper)]
    assert nulls.first_ablated_layer(pm.info, sets) == 1
    assert nulls.first_ablated_layer(pm.info, [frozenset(pm.info.components)]) == pm.info.n_layers
    passes = ab.forward_passes
    resumed = nulls.circuit_metric_values(ab, sets)
    assert ab.forward_passes - passes == len(sets) + 2  # + the clean residual stream and the block replay, once
    one_by_one = torch.stack([ab.score_parts(k)[0] for k in sets])
    assert torch.allclose(resumed, one_by_one, atol=1e-4)  # float rounding of the replayed blocks
    assert not torch.allclose(resumed[0], resumed[-1])  # the sets differ in what they ablate, and it shows


def test_planted_circuit_lies_above_its_whole_null(pm, ab):
    ab.empty_values()  # the empty circuit's pass, once per ablator (counted where it is first needed)
    r = nulls.circuit_null(ab, pm.planted, n_draws=30, seed=0, exclude_own=True, progress=False)
    assert r.observed > max(r.null) and r.p_value == pytest.approx(1 / 31) and r.observed_percentile == 100.0
    assert r.observed == pytest.approx(1.0, abs=0.05)  # the planted circuit is all of the behaviour
    assert r.forward_passes == 31 and r.n_draws == 30 and r.matched["heads_per_layer"] == {"0": 1, "1": 1}
    assert NullDistribution.from_json(r.to_json()) == r  # exact round trip
    score = nulls.circuit_null(ab, pm.planted, n_draws=30, seed=0, exclude_own=True, statistic="score", progress=False)
    assert score.p_value == r.p_value and score.observed == pytest.approx(ab.score(pm.planted).score, abs=1e-6)
    with pytest.raises(ParameterError, match="statistic"):
        nulls.circuit_null(ab, pm.planted, statistic="auc")


def test_embedded_attribution_circuit_beats_its_matched_null(smollm):
    """SmolLM2, 12 digits prompts: the 20 components the fast method's attribution ranks highest keep more of
    the logit difference than every one of 19 random circuits matched to them per layer."""
    from seqcirc_utils.evaluation.curves import attribution_node_scores, ranked
    from seqcirc_utils.tasks.datasets import make_dataset

    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=12, seed=0, model_name="smollm2-135m")
    ab = Ablator(model, info, ds)
    circuit = ranked(attribution_node_scores(ab, ig_steps=2))[:20]
    r = nulls.circuit_null(ab, circuit, n_draws=19, seed=0, progress=False)
    assert r.observed > max(r.null) and r.p_value == pytest.approx(1 / 20)
    assert r.n_clusters == ds.n_sequences and r.matched["n_mlps"] == sum(c.is_mlp for c in circuit)


def test_identical_prompts_run_once_and_give_the_same_metrics():
    """Mean ablation: a dataset whose prompts repeat gives, circuit by circuit, the same per-prompt metrics as
    scoring each prompt on its own rows (the duplicates are run once and copied back)."""
    from seqcirc_utils.evaluation.nulls import circuit_metric_values, distinct_rows

    tokens = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]])
    rows, inverse = distinct_rows(tokens)
    assert rows.tolist() == [[1, 2], [3, 4], [5, 6]] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert torch.equal(rows[inverse], tokens)
    same, ident = distinct_rows(tokens, keep_all=True)
    assert torch.equal(same, tokens) and ident.tolist() == [0, 1, 2, 3, 4]

    pm = P.build_planted_model()
    ds = P.planted_dataset(pm, n=6, seed=0)
    doubled = ds.subset(list(range(len(ds))) + list(range(len(ds))))
    ab = Ablator(pm.model, pm.info, doubled, mode="mean", metric="logit_diff")
    circuits = [frozenset(pm.planted), frozenset(list(pm.info.components)[:3]), frozenset()]
    passes = ab.forward_passes
    got = circuit_metric_values(ab, circuits, draws_per_pass=2)
    assert ab.forward_passes - passes == len(circuits)
    for i, kept in enumerate(circuits):
        brute = ab.metric_values(ab.logits([c for c in pm.info.components if c not in kept]))  # every prompt run
        assert torch.allclose(got[i], brute, atol=1e-5)
