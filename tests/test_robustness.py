"""Robustness statistics against brute force on hand-written circuits, and the factor loop end to end on a
tiny model with a known answer (the planted-circuit model of :mod:`seqcirc_utils.evaluation.planted`: a random tiny
model has no behaviour, so discovery refuses its baseline)."""

import math
import random

import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp, parse_component
from seqcirc_utils.evaluation import robustness as R
from seqcirc_utils.evaluation.planted import build_planted_model, planted_dataset
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import CORRUPTIONS

UNIVERSE = [head(l, h) for l in range(3) for h in range(4)] + [mlp(l) for l in range(3)]
HAND = [  # five hand-written circuits
    {head(0, 1), head(2, 3), mlp(2)},
    {head(0, 1), head(2, 3), mlp(2), head(1, 0)},
    {head(0, 1), mlp(2)},
    {head(0, 1), head(2, 3), mlp(2), mlp(0)},
    {head(0, 1), head(2, 3), head(1, 0), head(1, 2)},
]


def _vectors(circuits):
    return [[int(c in s) for c in UNIVERSE] for s in circuits]


def _bf_jaccard(u, v):
    inter = sum(a & b for a, b in zip(u, v))
    union = sum(a | b for a, b in zip(u, v))
    return 1.0 if union == 0 else inter / union


def _random_circuits(seed, k):
    rng = random.Random(seed)
    return [{c for c in UNIVERSE if rng.random() < 0.4} for _ in range(k)]


@pytest.mark.parametrize("circuits", [HAND, _random_circuits(0, 7), _random_circuits(1, 2), [set(), set(), {mlp(0)}]])
def test_statistics_match_brute_force(circuits):
    vecs = _vectors(circuits)
    n = len(vecs)
    pair_values = [_bf_jaccard(vecs[i], vecs[j]) for i in range(n) for j in range(n) if i < j]
    assert R.mean_pairwise_jaccard(circuits) == pytest.approx(sum(pair_values) / len(pair_values))
    freq = R.membership_frequency(circuits, UNIVERSE)
    for k, c in enumerate(UNIVERSE):
        count = sum(v[k] for v in vecs)
        row = freq.iloc[k]
        assert row["component"] == str(c) and row["count"] == count and row["frequency"] == pytest.approx(count / n)
    core = R.core_components(circuits, 0.8)
    assert core == {c for k, c in enumerate(UNIVERSE) if 5 * sum(v[k] for v in vecs) >= 4 * n}


def test_hand_written_values():
    assert R.jaccard({head(0, 1), mlp(2)}, {head(0, 1), head(2, 3)}) == pytest.approx(1 / 3)
    assert R.jaccard(set(), set()) == 1.0
    # L0.H1 in 5/5, L2.H3 in 4/5 (80 %: in the core), MLP2 in 4/5, L1.H0 in 2/5
    assert R.core_components(HAND) == {head(0, 1), head(2, 3), mlp(2)}
    assert R.core_components(HAND, 1.0) == {head(0, 1)}
    assert R.core_components([{mlp(0)}, {mlp(0)}, {mlp(0)}, set()], 0.8) == set()  # 75 % < 80 %
    assert math.isnan(R.mean_pairwise_jaccard([HAND[0]]))


def test_membership_grid_layout():
    freq = R.membership_frequency(HAND, UNIVERSE)
    grid = R.membership_grid(freq, n_heads=4)
    assert list(grid.columns) == ["layer", "column", "value"]
    assert len(grid) == 3 * 5 and list(grid["column"][:5]) == ["H0", "H1", "H2", "H3", "MLP"]
    cell = grid[(grid["layer"] == 2) & (grid["column"] == "MLP")]["value"].item()
    assert cell == pytest.approx(0.8)
    assert grid[(grid["layer"] == 0) & (grid["column"] == "H1")]["value"].item() == 1.0


def test_factor_summary_groups_runs():
    runs = [
        R.RobustnessRun(
            "digits", "seed", str(k), k, "randAll", "logit_diff", "fast", frozenset(c), 0.8 + k / 100, 1.0, 16, 10, 0.1
        )
        for k, c in enumerate(HAND)
    ]
    runs += [
        R.RobustnessRun("digits", "metric", m, 0, "randAll", m, "sweep", frozenset(HAND[0]), 0.9, 1.0, 16, 10, 0.1)
        for m in ("logit_diff", "kl")
    ]
    table = R.factor_summary(runs)
    assert list(table["factor"]) == ["seed", "metric"]
    seed_row = table.iloc[0]
    assert seed_row["n_runs"] == 5 and seed_row["mean_jaccard"] == pytest.approx(R.mean_pairwise_jaccard(HAND))
    assert seed_row["size_min"] == 2 and seed_row["size_max"] == 4
    assert seed_row["size_mean"] == pytest.approx(sum(map(len, HAND)) / 5)
    assert seed_row["score_max"] == pytest.approx(0.84)
    assert table.iloc[1]["mean_jaccard"] == 1.0


def test_bad_inputs_name_valid_values():
    with pytest.raises(ParameterError, match="valid: seed, order, corruption, metric"):
        R.robustness_runs(None, None, "m", "digits", factors=["colour"])
    with pytest.raises(ParameterError, match="valid: randAll"):
        R.robustness_runs(None, None, "m", "digits", corruptions=["shuffle"])
    with pytest.raises(ParameterError, match="unknown pruning method .acdc.; valid: sweep, fast"):
        R.robustness_runs(None, None, "m", "digits", method="acdc")
    with pytest.raises(ParameterError, match="n_seeds"):
        R.robustness_runs(None, None, "m", "digits", n_seeds=0)
    with pytest.raises(ParameterError, match=r"\(0, 1\]"):
        R.core_components(HAND, 0)


# --------------------------------------------------------------------------- end to end on a tiny model


@pytest.fixture(scope="module")
def pm():
    return build_planted_model()


def _grid(pm):
    return R.robustness_runs(
        pm.model,
        pm.info,
        pm.info.name,
        pm.family,
        threshold=0.8,
        n_seeds=2,
        n_orders=2,
        corruptions=CORRUPTIONS,
        method="fast",
        n_prompts=16,
        template="pure",
        progress=False,
    )


def test_factor_loop_end_to_end(pm):
    runs = _grid(pm)
    plan = [(r.factor, r.level) for r in runs]
    assert plan == (
        [("seed", "0"), ("seed", "1"), ("order", "paper"), ("order", "random0"), ("order", "random1")]
        + [("corruption", c) for c in CORRUPTIONS]
        + [("metric", "logit_diff"), ("metric", "kl")]
    )
    by = {(r.factor, r.level): r for r in runs}
    # shared runs are computed once: the base run (seed 0 = randAll) and the paper sweep (order paper = metric default)
    assert by[("seed", "0")].seconds == by[("corruption", "randAll")].seconds
    assert by[("order", "paper")].seconds == by[("metric", "logit_diff")].seconds
    assert by[("seed", "1")].seconds != by[("seed", "0")].seconds
    assert [r.metric for r in runs if r.factor == "metric"] == ["logit_diff", "kl"]
    assert [r.method for r in runs if r.factor == "order"] == ["sweep", "sweep-random-order", "sweep-random-order"]
    assert by[("seed", "1")].method == "fast" and by[("metric", "kl")].method == "sweep"
    first, second = by[("order", "random0")].order, by[("order", "random1")].order
    assert first != second and sorted(first) == sorted(map(str, pm.info.components))
    # every factor recovers the planted circuit of this model, so every statistic is exact
    for r in runs:
        assert r.components == pm.planted, (r.factor, r.level)
        assert r.score >= 0.8 and r.n_prompts >= 8
    summary = R.factor_summary(runs)
    assert list(summary["factor"]) == list(R.FACTORS)
    assert (summary["mean_jaccard"] == 1.0).all()
    assert R.core_components([r.components for r in runs]) == pm.planted
    table = R.runs_table(runs)
    assert len(table) == len(runs) and "circuit" in table.columns
    # the same seed gives the same circuits (and the same scores)
    again = _grid(pm)
    assert [(r.components, r.score) for r in again] == [(r.components, r.score) for r in runs]


def test_score_core_matches_independent_rescoring(pm):
    core = sorted(pm.planted)
    out = R.score_core(pm.model, pm.info, pm.info.name, pm.family, core, n_prompts=16, template="pure", seed=0)
    assert out["components"] == [str(c) for c in sorted(core, key=lambda c: (c.layer, c.kind != "head"))]
    for key, seed in (("in_sample", 0), ("heldout", 1000)):
        ds = planted_dataset(pm, n=16, seed=seed)  # the planted model answers every prompt, so the filter keeps all
        expected = Ablator(pm.model, pm.info, ds).score(core).score
        assert out[key]["seed"] == seed and out[key]["n_prompts"] == len(ds)
        assert out[key]["score"] == pytest.approx(expected, rel=1e-6)
        lo, hi = out[key]["ci95"]
        assert lo <= out[key]["score"] <= hi
    assert out["score"] == out["in_sample"]["score"]
    # a non-circuit scores low held-out too
    half = R.score_core(pm.model, pm.info, pm.info.name, pm.family, [head(0, 0), mlp(1)], n_prompts=16, template="pure")
    assert half["heldout"]["score"] < 0.8
    assert [parse_component(c) for c in half["components"]] == [head(0, 0), mlp(1)]


def test_a_seed_with_too_few_passing_prompts_is_drawn_larger(tiny_llama, monkeypatch):
    """A robustness run's dataset grows (2x, 4x, same seed) instead of failing the chapter when its seed leaves
    too few prompts after the filter (the full-size book once stopped on 4 of 12 number_words prompts)."""
    from seqcirc_utils.discovery import pipeline as circuits

    model, _ = tiny_llama
    monkeypatch.setattr(circuits, "filter_to_correct", lambda model, ds: ds.subset(range(0, len(ds), 3)))
    drawn = []
    real_make = circuits.make_dataset

    def counting_make(*args, **kwargs):
        drawn.append(kwargs["n"])
        return real_make(*args, **kwargs)

    monkeypatch.setattr(circuits, "make_dataset", counting_make)
    ds = R.robustness_dataset(model, "tiny-llama", "digits", seed=3, n_prompts=12, template="pure", min_prompts=8)
    assert drawn == [12, 24] and len(ds) == 8  # 12 -> 4 kept, 24 -> 8 kept
    first = real_make(model.tokenizer, "digits", model_name="tiny-llama", n=24, seed=3, template="pure")
    assert [p.text for p in ds.prompts] == [first.prompts[i].text for i in range(0, 24, 3)]
    drawn.clear()
    with pytest.raises(circuits.TooFewPromptsError, match="pass the filter"):
        R.robustness_dataset(model, "tiny-llama", "digits", seed=3, n_prompts=2, template="pure", min_prompts=8)
    assert drawn == [2, 4, 8]
