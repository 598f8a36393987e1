"""Faithfulness curves (MIB's CPR / CMD): areas against a hand computation, curve points against the
Ablator, the ranking builders, and the planted model's true ranking above random rankings."""

from __future__ import annotations

import math

import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.records import FaithfulnessCurve
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.pipeline import score_with_ci
from seqcirc_utils.discovery.pruning import prune
from seqcirc_utils.evaluation import curves
from seqcirc_utils.evaluation import planted as P
from seqcirc_utils.scoring.ablation import Ablator


def test_areas_by_hand():
    x = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    f = [0.0, 0.1, 0.3, 0.5, 0.9, 1.2, 1.0]
    g = [0.2, 0.2, 0.4, 0.8, 1.0, 1.1, 1.0]
    cpr = cmd = cpr_log = cmd_log = 0.0
    for i in range(len(x) - 1):  # trapezoids, one at a time
        dx, dlog = x[i + 1] - x[i], math.log10(x[i + 1]) - math.log10(x[i])
        cpr += dx * (f[i] + f[i + 1]) / 2
        cmd += dx * (abs(1 - g[i]) + abs(1 - g[i + 1])) / 2
        cpr_log += dlog * (f[i] + f[i + 1]) / 2
        cmd_log += dlog * (abs(1 - g[i]) + abs(1 - g[i + 1])) / 2
    got = curves.curve_areas(x, f, g)
    assert got == pytest.approx({"cpr": cpr, "cmd": cmd, "cpr_log": cpr_log / 2, "cmd_log": cmd_log / 2})
    ideal = curves.curve_areas(x, [1.0] * 7, [1.0] * 7)
    assert ideal == pytest.approx({"cpr": 0.99, "cmd": 0.0, "cpr_log": 1.0, "cmd_log": 0.0})
    with pytest.raises(ParameterError, match="fractions"):
        curves.curve_areas([0.5, 0.2], [0, 0], [0, 0])


def test_sizes_and_ranking_order():
    assert curves.circuit_sizes(300) == [3, 6, 15, 30, 60, 150, 300]
    assert curves.circuit_sizes(10) == [1, 1, 1, 1, 2, 5, 10]
    s = {head(0, 1): -3.0, head(0, 0): 2.0, mlp(0): 2.0, head(1, 0): 0.5}
    assert curves.ranked(s) == [head(0, 0), mlp(0), head(1, 0), head(0, 1)]  # ties in forward order
    assert curves.ranked(s, absolute=True) == [head(0, 1), head(0, 0), mlp(0), head(1, 0)]


@pytest.fixture(scope="module")
def pm():
    return P.build_planted_model()


@pytest.fixture(scope="module")
def ab(pm):
    return Ablator(pm.model, pm.info, P.planted_dataset(pm, n=16, seed=0), mode="mean", metric="logit_diff")


def test_curve_points_equal_rescored_circuits(pm, ab):
    scores = curves.random_scores(pm.info.components, seed=3)
    passes = ab.forward_passes
    c = curves.faithfulness_curve(ab, scores, "random", signed=False, seed=3)
    assert ab.forward_passes - passes <= len(set(c.sizes)) + 1  # one pass per distinct point (+ empty once)
    order = curves.ranked(scores)
    for k, f in zip(c.sizes, c.faithfulness_signed):
        assert f == pytest.approx(score_with_ci(ab, order[:k], n_resamples=20)["faithfulness"], abs=1e-5)
    assert c.faithfulness_abs == c.faithfulness_signed and c.faithfulness_signed[-1] == pytest.approx(1.0, abs=1e-6)
    assert FaithfulnessCurve.from_json(c.to_json()) == c


def test_planted_true_ranking_beats_random(pm, ab):
    true = {c: (3.0 if c == mlp(1) else 2.0 if c in pm.planted else 0.0) for c in pm.info.components}
    best = curves.faithfulness_curve(ab, true, "true", signed=False)
    randoms = [
        curves.faithfulness_curve(ab, curves.random_scores(pm.info.components, s), "random", signed=False, seed=s)
        for s in range(5)
    ]
    assert all(best.cpr >= r.cpr and best.cmd <= r.cmd for r in randoms)
    assert best.cpr > sum(r.cpr for r in randoms) / 5 and best.cmd < sum(r.cmd for r in randoms) / 5
    assert best.cpr_log > sum(r.cpr_log for r in randoms) / 5


def test_ranking_builders(pm, ab):
    results = prune(ab, [0.8], method="sweep", progress=False)
    scores = curves.removal_order_scores(results, pm.info.components)
    top = curves.ranked(scores)[: len(results[0].components)]
    assert set(top) == set(results[0].components) == set(pm.planted)
    attributions = P.eap_ig_attributions(ab, ig_steps=2)
    nodes = curves.eap_ig_node_scores(ab, attributions=attributions)
    for c in pm.info.components:
        assert nodes[c] == pytest.approx(-sum(a for e, a in attributions.items() if c in (e.sender, e.receiver)))
    assert set(curves.ranked(nodes)[:3]) == set(pm.planted)
    fast = curves.attribution_node_scores(ab, ig_steps=2)
    assert set(fast) == set(pm.info.components)
    c = curves.faithfulness_curve(ab, fast, "fast")
    assert len(c.faithfulness_abs) == len(c.fractions) and c.method == "fast"
    with pytest.raises(ParameterError, match="lacks"):
        curves.faithfulness_curve(ab, {mlp(1): 1.0}, "partial")


def test_embedded_attribution_ranking_beats_random(smollm):
    """SmolLM2, 12 digits prompts: the fast method's attribution ranking has a higher CPR and a lower CMD
    than a random ranking."""
    from seqcirc_utils.tasks.datasets import make_dataset

    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=12, seed=0, model_name="smollm2-135m")
    ab = Ablator(model, info, ds)
    fast = curves.faithfulness_curve(ab, curves.attribution_node_scores(ab, ig_steps=2), "fast")
    rand = curves.faithfulness_curve(ab, curves.random_scores(info.components, 0), "random", signed=False, seed=0)
    assert fast.cpr > rand.cpr and fast.cmd < rand.cmd
    assert fast.faithfulness_signed[-1] == pytest.approx(1.0, abs=1e-4) and fast.n_components == len(info.components)


def test_random_ranking_areas_equal_one_curve_per_draw(pm, ab):
    """The batched null: each draw's areas equal its own curve's (scored alone), the full model's point is 1
    without a pass, and the draws cost one pass per distinct top-k set that is not the full model."""
    fr = [0.1, 0.5, 1.0]
    passes = ab.forward_passes
    got = curves.random_ranking_areas(ab, 6, fr, seed=4, draws_per_pass=5, progress=False)
    n_sets = len(
        {
            frozenset(curves.ranked(curves.random_scores(pm.info.components, s))[:k])
            for s in range(4, 10)
            for k in curves.circuit_sizes(len(pm.info.components), fr)[:-1]
        }
    )
    assert ab.forward_passes - passes == n_sets
    for s, areas in zip(range(4, 10), got):
        alone = curves.faithfulness_curve(ab, curves.random_scores(pm.info.components, s), "random", fr, signed=False)
        assert areas == pytest.approx({k: getattr(alone, k) for k in ("cpr", "cmd", "cpr_log", "cmd_log")}, abs=1e-6)
    with pytest.raises(ParameterError, match="n_draws"):
        curves.random_ranking_areas(ab, 0, fr)


def test_embedded_fast_ranking_beats_every_random_ranking(smollm):
    """SmolLM2, 12 digits prompts: the fast method's CPR is above the CPR of each of 19 random rankings
    (p = 1 / 20), and its CMD below each of theirs."""
    from seqcirc_utils.evaluation.methods import claim_p, method_nulls
    from seqcirc_utils.tasks.datasets import make_dataset

    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=12, seed=0, model_name="smollm2-135m")
    ab = Ablator(model, info, ds)
    fr = [0.1, 0.5, 1.0]
    fast = curves.faithfulness_curve(ab, curves.attribution_node_scores(ab, ig_steps=2), "fast", fr)
    nulls = method_nulls(ab, {"fast": fast}, n_draws=19, progress=False)
    assert claim_p(nulls["cpr"]["fast"]) == pytest.approx(1 / 20) and claim_p(nulls["cmd"]["fast"]) == pytest.approx(
        1 / 20
    )
    assert nulls["cpr"]["fast"].observed > max(nulls["cpr"]["fast"].null)
