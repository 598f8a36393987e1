"""The sharing null (issue 18, 02 / 03): the overlap of circuits of these sizes expected by chance, against an exact
brute-force enumeration of the draws on a tiny model shape; permutations keep per-layer counts; the control's
comparison and the null columns of the sharing-by-threshold table."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from fractions import Fraction

import pandas as pd
import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.evaluation import compare, nulls
from seqcirc_utils.models.loading import ModelInfo

TINY = ModelInfo("tiny-shape", n_layers=3, n_heads=3, n_kv_heads=3, d_model=6, d_head=2, d_mlp=8, d_vocab=10)

CIRCUITS = {
    "a": [head(0, 0), head(0, 1), head(2, 2), mlp(1)],
    "b": [head(0, 2), head(1, 0), head(2, 2), mlp(0), mlp(1)],
    "c": [head(0, 1), head(1, 1), head(1, 2), mlp(2)],
}


def _mlp_law(layers: list[int], window: int) -> dict[frozenset, Fraction]:
    """The exact law of ``_draw_mlps``'s output, by enumerating every shuffle order and every choice of its greedy
    pass (uniform), keeping the passes that place every MLP and renormalising (a stuck pass is redrawn)."""
    pool = TINY.mlps
    law: dict[frozenset, Fraction] = {}
    orders = list(itertools.permutations(layers))

    def walk(order, taken, prob):
        if len(taken) == len(order):
            key = frozenset(taken)
            law[key] = law.get(key, Fraction(0)) + prob
            return
        layer = order[len(taken)]
        options = [m for m in pool if abs(m.layer - layer) <= window and m not in taken]
        for m in options:
            walk(order, [*taken, m], prob / len(options))

    for order in orders:
        walk(order, [], Fraction(1, len(orders)))
    total = sum(law.values())
    return {k: v / total for k, v in law.items()}


def _exact_law(circuit, window: int = 1) -> dict[frozenset, Fraction]:
    """The exact law of one matched draw of ``circuit``: uniform head subsets per layer x the MLP law."""
    heads = nulls.heads_per_layer(circuit)
    per_layer = [
        [frozenset(s) for s in itertools.combinations([h for h in TINY.heads if h.layer == layer], n)]
        for layer, n in heads.items()
    ]
    mlps = _mlp_law([c.layer for c in circuit if c.is_mlp], window)
    law: dict[frozenset, Fraction] = {}
    for parts in itertools.product(*per_layer):
        p_heads = Fraction(1, math.prod(len(x) for x in per_layer))
        for m, pm in mlps.items():
            key = frozenset().union(*parts, m)
            law[key] = law.get(key, Fraction(0)) + p_heads * pm
    return law


def _exact_moments(names, kind=None) -> tuple[Fraction, Fraction]:
    """Exact mean and variance of the number of components every circuit of ``names`` keeps, by enumerating the
    joint law of independent draws (every combination of outcomes)."""
    laws = [_exact_law(CIRCUITS[n]) for n in names]
    mean = second = Fraction(0)
    for combo in itertools.product(*(law.items() for law in laws)):
        p = math.prod((pr for _, pr in combo), start=Fraction(1))
        shared = frozenset.intersection(*(s for s, _ in combo))
        k = sum(1 for c in shared if kind is None or c.kind == kind)
        mean += p * k
        second += p * k * k
    return mean, second - mean * mean


def test_exact_law_sums_to_one_and_matches_head_formula():
    law = _exact_law(CIRCUITS["a"])
    assert sum(law.values()) == 1
    # heads only: per layer, independent uniform subsets share n * prod(k_i / n) heads on average
    mean, _ = _exact_moments(["a", "b"], kind="head")
    assert mean == 3 * Fraction(2, 3) * Fraction(1, 3) + 3 * Fraction(1, 3) * Fraction(1, 3)


@pytest.mark.parametrize(("names", "kind"), [(["a", "b"], None), (["a", "b", "c"], None), (["a", "b"], "head")])
def test_expected_overlap_against_brute_force_enumeration(names, kind):
    exact_mean, exact_var = _exact_moments(names, kind)
    n = 4000
    rows = nulls.sharing_null(TINY, {t: CIRCUITS[t] for t in names}, n_permutations=n, seed=7, kind=kind)
    everyone = next(r for r in rows if r["group"] == nulls.SHARED_BY_ALL)
    se = math.sqrt(float(exact_var) / n)
    assert abs(everyone["expected"] - float(exact_mean)) < 4 * se + 1e-12, (everyone["expected"], float(exact_mean))
    assert everyone["n_permutations"] == n and everyone["tasks"] == " & ".join(names)
    # each pair's expectation as well
    for r in rows:
        if r["group"] == nulls.PAIR:
            m, v = _exact_moments([r["a"], r["b"]], kind)
            assert abs(r["expected"] - float(m)) < 4 * math.sqrt(float(v) / n) + 1e-12


def test_observed_range_and_p_against_brute_force():
    rows = nulls.sharing_null(TINY, {t: CIRCUITS[t] for t in ("a", "b")}, n_permutations=99, seed=0)
    perm = nulls.permuted_circuits(TINY, {t: CIRCUITS[t] for t in ("a", "b")}, n_permutations=99, seed=0)
    counts = sorted(len(x & y) for x, y in zip(perm["a"], perm["b"]))
    observed = len(set(CIRCUITS["a"]) & set(CIRCUITS["b"]))  # L2.H2 and MLP1
    row = rows[0]
    assert row["observed"] == observed == 2
    assert row["expected"] == pytest.approx(sum(counts) / 99)
    assert row["p"] == pytest.approx((1 + sum(c >= observed for c in counts)) / 100)
    # the 95 % range: order statistics below the 2.5th and above the 97.5th percentile positions
    assert row["null_lo"] == counts[math.floor(0.025 * 98)] and row["null_hi"] == counts[math.ceil(0.975 * 98)]
    assert [r["tasks"] for r in rows] == ["a & b", "a & b"]  # shared by all, then the one pair
    # identical large circuits share far more than chance; disjoint ones share nothing (p = 1)
    same = nulls.sharing_null(TINY, {"x": TINY.heads[:5], "y": TINY.heads[:5]}, n_permutations=99, seed=1)[0]
    assert same["observed"] == 5 and same["expected"] < 5
    apart = nulls.sharing_null(TINY, {"x": [head(0, 0)], "y": [head(0, 1)]}, n_permutations=99)[0]
    assert apart["observed"] == 0 and apart["p"] == 1.0 and apart["percentile"] <= 100


def test_permutations_keep_per_layer_counts_and_mlp_windows():
    perm = nulls.permuted_circuits(TINY, CIRCUITS, n_permutations=200, seed=3)
    for t, draws in perm.items():
        assert len(draws) == 200 and len(set(draws)) > 5
        mlp_layers = [c.layer for c in CIRCUITS[t] if c.is_mlp]
        for d in draws:
            assert nulls.heads_per_layer(d) == nulls.heads_per_layer(CIRCUITS[t])
            drawn = sorted(c.layer for c in d if c.is_mlp)
            assert len(drawn) == len(mlp_layers) and all(min(abs(x - y) for y in mlp_layers) <= 1 for x in drawn)
    assert perm == nulls.permuted_circuits(TINY, CIRCUITS, n_permutations=200, seed=3)  # seeded
    assert perm["a"] != perm["b"]
    with pytest.raises(ParameterError, match="two or more circuits"):
        nulls.sharing_null(TINY, {"a": CIRCUITS["a"]})
    with pytest.raises(ParameterError, match="n_permutations"):
        nulls.sharing_null(TINY, CIRCUITS, n_permutations=0)


def test_null_by_threshold_and_control_comparison():
    levels = {0.9: dict(CIRCUITS), 0.8: {t: c[:2] for t, c in CIRCUITS.items()}}
    table = compare.sharing_null_by_threshold(TINY, levels, n_permutations=99)
    assert list(table.columns[:2]) == ["threshold", "group"]
    assert len(table) == 2 * (1 + 3)  # per threshold: shared by all and three pairs
    at = table[table["threshold"] == 0.9]
    direct = nulls.sharing_null(TINY, levels[0.9], n_permutations=99)
    assert at["expected"].tolist() == pytest.approx([r["expected"] for r in direct])
    pairs = pd.DataFrame(
        [
            {"group": "pair", "a": "a", "b": "b", "observed": 4, "expected": 1.0, "p": 0.01},
            {"group": "pair", "a": "a", "b": "ctl", "observed": 1, "expected": 1.5, "p": 0.8},
            {"group": "pair", "a": "b", "b": "ctl", "observed": 3, "expected": 1.0, "p": 0.04},
        ]
    )
    cross = pd.DataFrame(
        {"a": [100.0, 50.0, 10.0], "b": [70.0, 100.0, 20.0], "ctl": [5.0, 15.0, 100.0]}, index=["a", "b", "ctl"]
    )
    ref = compare.control_comparison(pairs, ["a", "b", "ctl"], "ctl", cross)
    assert ref["tasks"] == ["a", "b"] and (ref["task_pairs"], ref["control_pairs"]) == (1, 2)
    assert ref["task_excess_mean"] == 3.0 and ref["control_excess_max"] == 2.0 and ref["task_pairs_above_control"] == 1
    assert (ref["task_pairs_above_chance"], ref["control_pairs_above_chance"]) == (1, 1)
    assert ref["cross_between_tasks"] == pytest.approx((50 + 70) / 2)
    assert ref["cross_tasks_on_control"] == pytest.approx(10.0)  # circuits a, b on the control's data
    assert ref["cross_control_on_tasks"] == pytest.approx(15.0)  # the control's circuit on a's and b's data
    lonely = compare.control_comparison(pairs, ["a", "ctl"], "ctl")
    assert lonely["task_pairs"] == 0 and lonely["task_excess_mean"] is None and lonely["cross_between_tasks"] is None


# --------------------------------------------------------------------------- the records and the Findings readers


def _files(*records) -> dict:
    return {type(r).file: r for r in records}


def _ref(**values) -> dict:
    base = {
        "tasks": ["digits", "months"],
        "control": "induction_copy",
        "task_pairs": 1,
        "control_pairs": 2,
        "task_excess_mean": 5.0,
        "control_excess_mean": 1.0,
        "control_excess_max": 2.0,
        "task_pairs_above_control": 1,
        "task_pairs_above_chance": 1,
        "control_pairs_above_chance": 0,
        "cross_between_tasks": 60.0,
        "cross_tasks_on_control": 20.0,
        "cross_control_on_tasks": 10.0,
    }
    return base | values


def test_control_verdict_states_the_reference_plainly():
    from seqcirc_utils.report.verdicts import chance_phrase, control_verdict

    text = control_verdict(_ref(), 0.8)
    assert "at 80 %" in text and "+1.0 components with the control" in text and "two sequence tasks share +5.0" in text
    assert "the sequence tasks share more than any two tasks do" in text and "60 %" in text and "20 %" in text
    none = control_verdict(_ref(task_pairs_above_control=0, task_excess_mean=0.5), 0.8)
    assert "**the sequence tasks do not share more than any two tasks do**" in none
    some = control_verdict(_ref(task_pairs=3, task_pairs_above_control=2), 0.8)
    assert "Only 2 of 3 pairs" in some and "not for the sequence tasks as a whole" in some
    lonely = control_verdict(_ref(task_pairs=0, task_excess_mean=None, task_pairs_above_control=None))
    assert "no pair of sequence tasks to compare" in lonely
    assert control_verdict(None) == ""
    row = {"observed": 3, "expected": 1.234, "null_lo": 0.0, "null_hi": 3.0, "p": 0.04}
    assert chance_phrase(row) == "3 components (chance 1.2 [0, 3], p = 0.040)"
    flat = {
        "shared_heads": 1,
        "shared_heads_expected": 0.5,
        "shared_heads_lo": 0,
        "shared_heads_hi": 2,
        "shared_heads_p": 0.6,
    }
    assert chance_phrase(flat, "head", column="shared_heads") == "1 head (chance 0.5 [0, 2], p = 0.600)"


def test_findings_read_the_sharing_null_and_the_control():
    from record_fixtures import example, greater_than_overlap_digits, row

    from seqcirc_utils.core.result_records import (
        GreaterThanThresholds,
        SharedByThreshold,
        SharedCircuits,
    )
    from seqcirc_utils.report.findings import UNREADABLE, greater_than_overlap, shared_circuits

    null_row = {
        "group": "all",
        "a": None,
        "b": None,
        "tasks": "digits & months",
        "kind": "all",
        "observed": 4,
        "expected": 1.5,
        "null_lo": 0.0,
        "null_hi": 4.0,
        "percentile": 99.0,
        "p": 0.02,
        "n_permutations": 99,
    }
    shared = example(
        SharedCircuits,
        threshold=0.8,
        method="fast",
        template="among_words",
        shared=["MLP0", "L1.H1", "L2.H0", "MLP3"],
        control="induction_copy",
        methods={"digits": "fast", "months": "fast", "induction_copy": "fast"},
        summary=[
            row(SharedCircuits, "summary", task=t, threshold=0.8, heads=3, mlps=2, score=81.0)
            for t in ("digits", "months", "induction_copy")
        ],
        cross_task_percent={"digits": {"months": 50.0, "induction_copy": 90.0}, "months": {"digits": 40.0}},
        overlap_null=[null_row],
        control_reference=_ref(),
    )
    by_thr = example(
        SharedByThreshold,
        thresholds=[0.9, 0.8],
        shared={"0.9": ["MLP0", "L1.H1"], "0.8": ["MLP0"]},
        sharing_null=[null_row | {"threshold": 0.9, "observed": 2}, null_row | {"threshold": 0.8, "observed": 1}],
        lost_at={"shared": None, "beyond_chance": 0.8},
        n_permutations=99,
    )
    text = shared_circuits(_files(shared, by_thr))
    assert "induction_copy (control) 3 heads" in text and "shared by all 2 sequence tasks" in text
    assert "4 components (chance 1.5 [0, 4], p = 0.020) are shared" in text
    assert "induction_copy circuit" not in text  # the best / worst transfer is between sequence tasks
    assert "the months circuit transfers best (50 % on digits data)" in text  # data -> circuit -> percent
    assert "the digits circuit worst (40 % on months data)" in text
    assert "the sequence tasks share more than any two tasks do" in text
    assert "at 90 % 2 components (chance 1.5 [0, 4], p = 0.020)" in text
    assert "not above chance (p > 0.05) from 80 % down" in text and UNREADABLE not in text
    assert "matched per layer to each circuit" not in text  # a schema-2 record has no cross-task baselines

    def cell(circuit, data, score, p95, mean):
        null = dict(null_mean=mean, null_p5=0.0, null_p95=p95, percentile=99.0, p=0.1, n_draws=9)
        return dict(circuit=circuit, data=data, score=score, **null)

    baselines = [
        cell("digits", "months", 0.5, 0.2, 0.05),
        cell("months", "digits", 0.4, 0.45, 0.1),
        cell("digits", "induction_copy", 0.9, 0.1, 0.02),  # the control's cells are not transfers between tasks
    ]
    text = shared_circuits(_files(replace(shared, cross_task_baselines=baselines), by_thr))
    assert (
        "Random circuits matched per layer to each circuit and scored on the same data keep 5 %-10 % on average "
        "(9 a cell: a reference beside the transfers, too few draws for a test)." in text
    )
    assert "beat their null" not in text  # 9 draws make no claim
    many = [dict(r, n_draws=99, p=p) for r, p in zip(baselines, (0.01, 0.3, 0.01))]
    text = shared_circuits(_files(replace(shared, cross_task_baselines=many), by_thr))
    assert "1 of 2 transfers between sequence tasks beat their null (p <= 0.05)" in text

    gt = greater_than_overlap_digits()
    ladder = example(
        GreaterThanThresholds,
        thresholds=[0.97, 0.5],
        method="fast",
        lost_at={"digits": 0.5},
        lost_beyond_chance={"digits": 0.97},
        n_permutations=99,
        sharing=[
            row(
                GreaterThanThresholds,
                "sharing",
                threshold=t,
                task="digits",
                shared_heads=k,
                shared_heads_expected=e,
                shared_heads_lo=0,
                shared_heads_hi=3,
                shared_heads_p=p,
            )
            for t, k, e, p in ((0.97, 4, 3.2, 0.4), (0.5, 0, 0.4, 1.0))
        ],
    )
    text = greater_than_overlap(_files(gt, ladder))
    assert "digits from 50 %, where chance leaves 0.4 [0, 3]; not above chance from 97 %" in text
