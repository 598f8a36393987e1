"""Robustness statistics against brute force on hand-written circuits, and the factor loop end to end on a
tiny model with a known answer (the planted-circuit model of :mod:`seqcirc_utils.evaluation.planted`: a random tiny
model has no behaviour, so discovery refuses its baseline)."""

import math
import random

import numpy as np
import pytest
import torch

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import BaselineError, ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.evaluation import robustness as R
from seqcirc_utils.evaluation.nulls import heads_per_layer
from seqcirc_utils.evaluation.planted import build_planted_model, planted_dataset
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import CORRUPTIONS, sequence_overlap

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
        R.robustness_runs(None, None, "m", "digits", DiscoveryConfig(method="acdc"))
    with pytest.raises(ParameterError, match="n_seeds"):
        R.robustness_runs(None, None, "m", "digits", n_seeds=0)
    with pytest.raises(ParameterError, match="one threshold"):
        R.robustness_runs(None, None, "m", "digits", DiscoveryConfig([0.9, 0.8]))
    with pytest.raises(ParameterError, match=r"\(0, 1\]"):
        R.core_components(HAND, 0)
    with pytest.raises(ParameterError, match="at least two circuits"):
        R.jaccard_reference(None, [HAND[0]])


def test_distinct_runs_count_a_shared_base_run_once():
    """The base run is the seed factor's first level and the corruption factor's randAll: pooled statistics
    (membership frequency, the core) count it once."""

    def run(factor, level, components, run_id):
        return R.RobustnessRun(
            "digits",
            factor,
            level,
            0,
            "randAll",
            "logit_diff",
            "fast",
            frozenset(components),
            0.8,
            1.0,
            8,
            1,
            0.1,
            run_id=run_id,
        )

    base = {head(0, 1), mlp(2)}
    runs = [
        run("seed", "0", base, "seed=0 corruption=randAll"),
        run("seed", "1", {head(0, 1)}, "seed=1 corruption=randAll"),
        run("corruption", "randAll", base, "seed=0 corruption=randAll"),
        run("corruption", "permutation", {mlp(0)}, "seed=0 corruption=permutation"),
    ]
    distinct = R.distinct_runs(runs)
    assert [(r.factor, r.level) for r in distinct] == [("seed", "0"), ("seed", "1"), ("corruption", "permutation")]
    freq = R.membership_frequency([r.components for r in distinct], UNIVERSE).set_index("component")
    assert freq.loc["MLP2", "count"] == 1 and freq.loc["MLP2", "frequency"] == pytest.approx(1 / 3)  # 2/4 if doubled
    assert freq.loc["L0.H1", "frequency"] == pytest.approx(2 / 3)
    assert R.core_components([r.components for r in distinct], 0.6) == {head(0, 1)}


# --------------------------------------------------------------------------- the Jaccard reference


def test_jaccard_reference_keeps_per_layer_counts_and_matches_brute_force(tiny_llama):
    _, info = tiny_llama
    heads, mlps = list(info.heads), list(info.mlps)
    rng = random.Random(3)
    circuits = [frozenset(rng.sample(heads, 4) + rng.sample(mlps, 1)) for _ in range(4)]
    draws = R.matched_draws(info, circuits, n_draws=99, seed=7)
    assert [len(d) for d in draws] == [99] * 4
    for circuit, own in zip(circuits, draws):
        mlp_layers = sorted(c.layer for c in circuit if c.is_mlp)
        for d in own:
            assert heads_per_layer(d) == heads_per_layer(circuit)  # the same heads in every layer
            drawn = sorted(c.layer for c in d if c.is_mlp)
            assert len(drawn) == len(mlp_layers) and all(abs(a - b) <= 1 for a, b in zip(drawn, mlp_layers))
    ref = R.jaccard_reference(info, circuits, n_draws=99, seed=7)
    vecs = [[int(c in s) for c in info.components] for s in circuits]
    pairs = [(i, j) for i in range(4) for j in range(4) if i < j]
    assert ref["observed"] == pytest.approx(sum(_bf_jaccard(vecs[i], vecs[j]) for i, j in pairs) / len(pairs))
    for k in (0, 50, 98):
        dv = [[int(c in draws[i][k]) for c in info.components] for i in range(4)]
        expected = sum(_bf_jaccard(dv[i], dv[j]) for i, j in pairs) / len(pairs)
        assert ref["null"][k] == pytest.approx(expected)
    null = np.array(ref["null"])
    assert ref["n_draws"] == 99 and ref["null_mean"] == pytest.approx(null.mean())
    assert ref["p_value"] == pytest.approx((1 + (null >= ref["observed"]).sum()) / 100)
    # identical circuits sit above every random overlap of the same make-up (here: most draws differ)
    same = R.jaccard_reference(info, [circuits[0]] * 3, n_draws=99, seed=1)
    assert same["observed"] == 1.0 and same["null_mean"] < 1.0


# --------------------------------------------------------------------------- end to end on a tiny model


@pytest.fixture(scope="module")
def pm():
    return build_planted_model()


def _grid(pm, **options):
    kwargs = dict(n_seeds=2, n_orders=2, corruptions=CORRUPTIONS, n_prompts=16, template="pure", progress=False)
    return R.robustness_runs(
        pm.model, pm.info, pm.info.name, pm.family, DiscoveryConfig([0.8], method="fast"), **(kwargs | options)
    )


@pytest.mark.slow
def test_factor_loop_end_to_end(pm, monkeypatch):
    calls = []
    real_sweep = R.sweep_prune

    def recording_sweep(ablator, thresholds, order="paper", start=None, **kwargs):
        calls.append((order if isinstance(order, str) else [str(c) for c in order], start))
        return real_sweep(ablator, thresholds, order=order, start=start, **kwargs)

    monkeypatch.setattr(R, "sweep_prune", recording_sweep)
    grid = _grid(pm)
    runs = grid.runs
    assert grid.failed == [] and sorted(grid.heldout) == [0, 1]
    plan = [(r.factor, r.level) for r in runs]
    assert plan == (
        [("seed", "0"), ("seed", "1"), ("order", "paper"), ("order", "random0"), ("order", "random1")]
        + [("corruption", c) for c in CORRUPTIONS]
        + [("metric", "logit_diff"), ("metric", "kl")]
    )
    by = {(r.factor, r.level): r for r in runs}
    # shared runs are computed once: the base run (seed 0 = randAll) and the paper sweep (order paper = metric default)
    assert by[("seed", "0")].run_id == by[("corruption", "randAll")].run_id
    assert by[("seed", "0")].seconds == by[("corruption", "randAll")].seconds
    assert by[("order", "paper")].run_id == by[("metric", "logit_diff")].run_id
    assert by[("seed", "1")].seconds != by[("seed", "0")].seconds
    assert len(R.distinct_runs(runs)) == len(runs) - 2
    assert [r.metric for r in runs if r.factor == "metric"] == ["logit_diff", "kl"]
    assert [r.method for r in runs if r.factor == "order"] == ["sweep", R.RANDOM_ORDER_METHOD, R.RANDOM_ORDER_METHOD]
    assert by[("seed", "1")].method == "fast" and by[("metric", "kl")].method == "sweep"
    first, second = by[("order", "random0")].order, by[("order", "random1")].order
    assert first != second and sorted(first) == sorted(map(str, pm.info.components))
    # a random order gets the paper sweep's two passes: the order, then its reverse over the survivors
    for order in (first, second):
        i = next(k for k, (o, _) in enumerate(calls) if o == order)
        assert calls[i + 1][0] == order[::-1] and calls[i + 1][1] is not None
    assert sum(c[0] == "paper" for c in calls) == 2  # the paper order (backward + forward inside), KL sweep
    # each seed's discovery prompts are one side of its split, its held-out prompts the other
    for r in runs:
        if r.factor == "seed":
            assert sequence_overlap(r.dataset, grid.heldout[r.seed].dataset) == 0
            assert r.dataset.spec.split.role == "discovery"
    # every factor recovers the planted circuit of this model, so every statistic is exact
    for r in runs:
        assert r.components == pm.planted, (r.factor, r.level)
        assert r.score >= 0.8 and r.n_prompts >= 8
    summary = R.factor_summary(runs)
    assert list(summary["factor"]) == list(R.FACTORS)
    assert (summary["mean_jaccard"] == 1.0).all()
    assert R.core_components([r.components for r in R.distinct_runs(runs)]) == pm.planted
    table = R.runs_table(runs)
    assert len(table) == len(runs) and "circuit" in table.columns
    # the same seed gives the same circuits (and the same scores)
    again = _grid(pm)
    assert [(r.components, r.score) for r in again.runs] == [(r.components, r.score) for r in runs]


def test_a_run_whose_baseline_fails_is_listed_not_used(pm, monkeypatch):
    real = R.check_baseline

    def failing_for_seed_1(ablator, model_name=""):
        if ablator.dataset.spec.seed == 1:
            raise BaselineError("meaningless baseline (test)")
        return real(ablator, model_name)

    monkeypatch.setattr(R, "check_baseline", failing_for_seed_1)
    grid = _grid(pm, n_seeds=3, factors=["seed"])
    assert [r.level for r in grid.runs] == ["0", "2"]
    assert [(f["factor"], f["level"]) for f in grid.failed] == [("seed", "1")]
    assert "meaningless baseline" in grid.failed[0]["reason"]
    assert sorted(grid.heldout) == [0, 2]


def test_transfer_scores_match_a_brute_force_loop(pm):
    planted = sorted(pm.planted)
    circuits = [
        pm.planted,
        frozenset(planted[:2]),
        frozenset(pm.info.components),
        frozenset(),
        frozenset(random.Random(0).sample(list(pm.info.components), 4)),
    ]
    datasets = [planted_dataset(pm, n=12, seed=s) for s in (5, 6)]
    ablators = [Ablator(pm.model, pm.info, ds) for ds in datasets]
    scores = R.transfer_scores(circuits, ablators, draws_per_pass=2)
    assert scores.shape == (5, 2)
    for j, ds in enumerate(datasets):
        fresh = Ablator(pm.model, pm.info, ds)
        for i, c in enumerate(circuits):
            assert scores[i, j] == pytest.approx(fresh.score(c).score, rel=1e-5, abs=1e-6), (i, j)


def test_transfer_matrix_pass_rate_against_brute_force():
    scores = np.array([[0.9, 0.85, 0.7], [0.6, 0.95, 0.81], [0.79, 0.8, 0.9]])
    tm = R.TransferMatrix(
        "digits", 0.8, [0, 1, 2], [0, 1, 2], [frozenset()] * 3, scores, np.zeros((3, 3), int), [8] * 3, [4] * 3
    )
    off = [(i, j) for i in range(3) for j in range(3) if i != j]
    n_pass = sum(scores[i, j] >= 0.8 for i, j in off)  # 0.85, 0.81, 0.8 -> 3 of 6
    out = tm.pass_rate(n_resamples=2000, seed=0)
    assert out["n_cells"] == 6 and out["n_pass"] == n_pass == 3 and out["pass_rate"] == pytest.approx(0.5)
    assert out["diagonal_pass_rate"] == 1.0 and out["mean_score"] == pytest.approx(np.mean([scores[c] for c in off]))
    lo, hi = out["pass_ci95"]
    # brute force: resample source circuits (rows) with replacement, pool their off-diagonal cells
    gen = torch.Generator().manual_seed(0)
    draws = torch.randint(0, 3, (2000, 3), generator=gen)
    rows = [[float(scores[i, j] >= 0.8) for j in range(3) if j != i] for i in range(3)]
    means = torch.tensor([sum(sum(rows[k]) for k in d.tolist()) / (2 * 3) for d in draws], dtype=torch.float64)
    expected = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert [lo, hi] == pytest.approx(expected)
    cells = tm.rows()
    assert len(cells) == 9 and sum(c["passes"] for c in cells if c["off_diagonal"]) == 3


def test_transfer_matrix_end_to_end(pm):
    grid = _grid(pm, n_seeds=3, factors=["seed"])
    core = frozenset(sorted(pm.planted)[:2])
    tm = R.transfer_matrix(grid, core=core)
    assert tm.sources == [0, 1, 2] and tm.targets == [0, 1, 2] and tm.scores.shape == (3, 3)
    assert all(tm.overlap[i, i] == 0 for i in range(3))
    for i, r in enumerate(grid.runs):
        for j, t in enumerate(tm.targets):
            fresh = Ablator(pm.model, pm.info, grid.heldout[t].dataset)
            assert tm.scores[i, j] == pytest.approx(fresh.score(r.components).score, rel=1e-5)
            assert tm.overlap[i, j] == sequence_overlap(r.dataset, grid.heldout[t].dataset)
        assert tm.core_scores[i] == pytest.approx(
            Ablator(pm.model, pm.info, grid.heldout[tm.targets[i]].dataset).score(core).score, rel=1e-5
        )
    stability = tm.pass_rate()
    assert stability["pass_rate"] == 1.0 and stability["n_cells"] == 6  # the planted circuit works everywhere
    summary = tm.core_summary()
    assert summary["n_components"] == 2 and summary["n_splits"] == 3
    assert summary["n_pass"] == sum(v >= 0.8 for v in tm.core_scores)


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


def test_record_round_trip_and_findings_paragraph(tmp_path):
    """The Robustness record (schema 2) round-trips and the Findings paragraph states the transfer pass rate with
    its interval and n, the Jaccard against its reference, and the core."""
    from record_fixtures import example, row

    from seqcirc_utils.core.result_records import Robustness
    from seqcirc_utils.core.results import write_json_atomic
    from seqcirc_utils.report.findings import READERS, ChapterStatus, chapter_finding

    record = example(
        Robustness,
        model="tiny",
        parameters={"threshold": 0.8},
        runs=[row(Robustness, "runs", task="numbers", components=["L0.H1"], run_id="seed=0")],
        transfer=[row(Robustness, "transfer", task="numbers", source_seed=0, heldout_seed=1, score=0.82, passes=True)],
        stability={
            "numbers": {
                "n_runs": 5,
                "n_cells": 20,
                "n_pass": 13,
                "pass_rate": 0.65,
                "pass_ci95": [0.4, 0.85],
                "diagonal_pass_rate": 0.8,
            }
        },
        jaccard={
            "numbers": {
                "observed": 0.41,
                "null_mean": 0.12,
                "n_draws": 99,
                "observed_percentile": 100.0,
                "p_value": 0.01,
            }
        },
        core={"numbers": {"components": ["L0.H1"], "n_components": 1, "mean_score": 0.5, "n_pass": 0, "n_splits": 5}},
        planted=[row(Robustness, "planted", method="fast", precision=1.0, recall=1.0)],
    )
    assert Robustness.from_json(record.to_json()) == record
    reader = next(r for r in READERS if r.notebook == "09_robustness")
    write_json_atomic(tmp_path / Robustness.file, record)
    text = chapter_finding(reader, ChapterStatus("09_robustness", "Robustness", True), tmp_path)
    assert "could not be summarised" not in text
    assert (
        "numbers (5 seeds)" in text and "13 of 20 cases (65 % [40 %, 85 %]; on its own held-out prompts 80 %)" in text
    )
    assert "mean Jaccard 0.41 against 0.12" in text and "n = 99" in text and "p = 0.01" in text
    assert "threshold on 0 of 5 held-out sets" in text and "fast 1.00/1.00" in text
    (h,) = reader.headlines({Robustness.file: record})  # the Findings abstract's row
    assert (h.effect, h.n_draws, h.p, h.verdict) == (0.41, 99, 0.01, "beats its null") and "5 seeds" in h.split
