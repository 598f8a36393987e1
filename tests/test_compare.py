import pandas as pd
import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.evaluation.compare import (
    analogous_ablation,
    circuits_from_records,
    cross_task_scores,
    membership_matrix,
    overlap_table,
    shared_components,
)
from seqcirc_utils.scoring.ablation import circuit_score
from seqcirc_utils.tasks.datasets import make_dataset


def test_overlap_by_hand():
    circuits = circuits_from_records(
        {
            "digits": {"heads": [[0, 1], [1, 2]], "mlps": [0]},
            "words": {"heads": [[0, 1], [1, 3]], "mlps": [0, 1]},
        }
    )
    row = overlap_table(circuits).iloc[0]
    assert (row["intersection"], row["union"]) == (2, 5) and row["jaccard"] == pytest.approx(0.4)
    assert shared_components(circuits) == [head(0, 1), mlp(0)]
    assert shared_components(circuits, kind="head") == [head(0, 1)]
    m = membership_matrix(circuits)
    assert m.loc["L1.H3"].tolist() == [False, True] and m.shape == (5, 2)


def test_cross_task_and_analogous_ablation_match_direct_scores(tiny_llama):
    model, info = tiny_llama
    data = {
        "digits": make_dataset(model.tokenizer, "digits", n=8, seed=0),
        "letters": make_dataset(model.tokenizer, "letters", template="comma", n=8, seed=0),
    }
    circuits = {"a": frozenset({head(0, 1), mlp(1)}), "b": frozenset({head(1, 2)})}
    table = cross_task_scores(model, info, circuits, data)
    for c, comps in circuits.items():
        for d, ds in data.items():
            assert table.loc[c, d] == pytest.approx(circuit_score(model, info, ds, circuit=comps).score)
    res = analogous_ablation(model, info, data["digits"], [head(0, 1)])
    assert res["before"] == pytest.approx(1.0)
    direct = circuit_score(model, info, data["digits"], circuit=set(info.components) - {head(0, 1)}).score
    assert res["after"] == pytest.approx(direct) and res["drop"] == pytest.approx(1.0 - direct)


def test_cross_task_baselines_against_a_brute_force_null(tiny_llama, one_thread):
    """Each off-diagonal cell: the circuit's score against matched random circuits, each scored directly."""
    from seqcirc_utils.evaluation.compare import cross_task_baselines
    from seqcirc_utils.evaluation.nulls import matched_random_circuits

    model, info = tiny_llama
    data = {
        "a": make_dataset(model.tokenizer, "digits", n=8, seed=0),
        "b": make_dataset(model.tokenizer, "letters", template="comma", n=8, seed=0),
    }
    circuits = {"a": frozenset({head(0, 1), head(1, 0), mlp(1)}), "b": frozenset({head(1, 2), mlp(0)})}
    table = cross_task_baselines(model, info, circuits, data, n_draws=7, seed=5)
    assert sorted(zip(table["circuit"], table["data"])) == [("a", "b"), ("b", "a")]  # the diagonal is left out
    for row in table.itertuples():
        ds = data[row.data]
        observed = circuit_score(model, info, ds, circuit=circuits[row.circuit]).score
        null = [
            circuit_score(model, info, ds, circuit=c).score
            for c in matched_random_circuits(info, circuits[row.circuit], 7, seed=5)
        ]
        assert row.score == pytest.approx(observed, abs=1e-4)
        assert row.null_mean == pytest.approx(sum(null) / 7, abs=1e-4) and row.n_draws == 7
        assert row.p == pytest.approx((1 + sum(v >= observed for v in null)) / 8)


def test_matched_random_heads_match_size_place_and_seed(tiny_llama):
    from seqcirc_utils.evaluation.compare import matched_random_heads

    _, info = tiny_llama
    sub = [head(0, 0), head(1, 1), mlp(0)]
    whole = matched_random_heads(info, sub, n_samples=4, seed=3)
    assert len(whole) == 4 and all(len(s) == 2 and not set(s) & set(sub) for s in whole)
    assert all(all(c.is_head for c in s) for s in whole)
    assert whole == matched_random_heads(info, sub, n_samples=4, seed=3)  # seeded
    within = [head(0, 0), head(0, 2), head(1, 3), mlp(1)]  # holds one of the sub-circuit's heads
    inside = matched_random_heads(info, sub, within, n_samples=6, seed=0)
    assert all(len(s) == 1 and s[0] in {head(0, 2), head(1, 3)} for s in inside)
    assert {s[0] for s in inside} == {head(0, 2), head(1, 3)}  # both candidates get drawn


# --------------------------------------------------------------------------- across thresholds


def _brute_status(c, ref, s):
    return "same" if c in ref and c in s else "dropped" if c in ref else "added" if c in s else ""


def test_same_different_matches_brute_force():
    from seqcirc_utils.evaluation.compare import same_different, same_different_counts

    ref = {head(0, 1), head(1, 2), mlp(0), mlp(1)}
    circuits = {0.9: {head(0, 1), head(1, 2), mlp(0)}, 0.8: {head(0, 1), head(1, 0)}, 0.7: set()}
    table = same_different(ref, circuits)
    every = ref | set().union(*circuits.values())
    assert set(table.index) == {str(c) for c in every} and list(table.columns) == [0.9, 0.8, 0.7]
    for c in every:
        for label, s in circuits.items():
            assert table.loc[str(c), label] == _brute_status(c, ref, s)
    counts = same_different_counts(table).set_index("circuit")
    for label, s in circuits.items():
        assert counts.loc[label, "same"] == len(ref & s)
        assert counts.loc[label, "dropped"] == len(ref - s)
        assert counts.loc[label, "added"] == len(s - ref)
        assert counts.loc[label, "kept_of_reference"] == pytest.approx(len(ref & s) / len(ref))


def test_shared_and_overlap_by_threshold_match_set_algebra():
    from seqcirc_utils.evaluation.compare import overlap_by_threshold, shared_by_threshold

    ladder = {
        0.9: {"a": {head(0, 1), head(1, 2), mlp(0)}, "b": {head(0, 1), mlp(0), mlp(1)}, "c": {head(0, 1), mlp(0)}},
        0.5: {"a": {head(0, 1)}, "b": {mlp(1)}, "c": {head(0, 1), mlp(1)}},
    }
    shared = shared_by_threshold(ladder)
    heads_only = shared_by_threshold(ladder, kind="head")
    for t, circuits in ladder.items():
        brute = set.intersection(*circuits.values())
        assert shared[t] == brute and heads_only[t] == {c for c in brute if c.is_head}
    table = overlap_by_threshold(ladder)
    assert len(table) == 2 * 3 and list(table.columns[:3]) == ["threshold", "a", "b"]
    for row in table.itertuples():
        sa, sb = ladder[row.threshold][row.a], ladder[row.threshold][row.b]
        assert row.intersection == len(sa & sb) and row.jaccard == pytest.approx(len(sa & sb) / len(sa | sb))


def test_random_circuits_match_kind_or_layer(tiny_llama):
    from seqcirc_utils.evaluation.compare import random_circuits

    _, info = tiny_llama
    comps = {head(0, 0), head(0, 1), head(1, 3), mlp(1)}
    by_kind = random_circuits(info, comps, n_samples=6, seed=2)
    assert by_kind == random_circuits(info, comps, n_samples=6, seed=2)  # seeded
    assert len({frozenset(r) for r in by_kind}) > 1  # draws differ
    for r in by_kind:
        assert sum(c.is_head for c in r) == 3 and sum(c.is_mlp for c in r) == 1 and len(r) == 4
    by_layer = random_circuits(info, comps, n_samples=6, seed=2, match="layer")
    for r in by_layer:
        assert mlp(1) in r and sum(c.is_mlp for c in r) == 1
        for layer in range(info.n_layers):
            assert sum(c.is_head and c.layer == layer for c in r) == sum(c.is_head and c.layer == layer for c in comps)
        # outside-first: layer 0 has heads outside the circuit, so the drawn ones are not the circuit's
        assert not {c for c in r if c.is_head} & {c for c in comps if c.is_head}
    with pytest.raises(ParameterError, match="valid: kind, layer"):
        random_circuits(info, comps, match="depth")


def test_score_against_random_matches_direct_scores(tiny_llama):
    from seqcirc_utils.evaluation.compare import random_circuits, score_against_random
    from seqcirc_utils.scoring.ablation import Ablator

    model, info = tiny_llama
    data = {
        "in": make_dataset(model.tokenizer, "digits", n=8, seed=0),
        "held": make_dataset(model.tokenizer, "digits", n=8, seed=1),
    }
    ablators = {k: Ablator(model, info, ds) for k, ds in data.items()}
    circuits = {0.9: {head(0, 1), head(1, 2), mlp(0)}, 0.8: {head(0, 1), head(1, 2), mlp(0)}, 0.7: {head(1, 2)}}
    before = {k: ab.forward_passes for k, ab in ablators.items()}
    table = score_against_random(info, circuits, ablators, n_random=3, seed=5, n_resamples=50)
    assert len(table) == 6
    for i, (label, comps) in enumerate(circuits.items()):
        randoms = random_circuits(info, comps, 3, 5 + i)
        for d, ds in data.items():
            row = table[(table["circuit"] == label) & (table["data"] == d)].iloc[0]
            direct = circuit_score(model, info, ds, circuit=comps).score
            rand = [circuit_score(model, info, ds, circuit=r).score for r in randoms]
            assert row["score"] == pytest.approx(direct, abs=1e-5)
            assert row["random_mean"] == pytest.approx(sum(rand) / 3, abs=1e-5)
            assert row["random_max"] == pytest.approx(max(rand), abs=1e-5)
            assert row["beats_random"] == (direct > max(rand))
            assert row["ci_lo"] <= row["ci_hi"] and (row["heads"], row["mlps"]) == (
                sum(c.is_head for c in comps),
                sum(c.is_mlp for c in comps),
            )
    # the repeated circuit (0.9 and 0.8) is scored once per dataset: at most 1 + 3 + 3 + 1 + 3 passes
    assert all(ablators[k].forward_passes - before[k] <= 11 for k in ablators)


def test_ablation_vs_random_matches_direct_scores(tiny_llama):
    from seqcirc_utils.evaluation.compare import ablation_vs_random, matched_random_heads
    from seqcirc_utils.scoring.ablation import Ablator

    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    ab = Ablator(model, info, ds)
    sub = [head(0, 1), head(1, 2), mlp(0)]
    res = ablation_vs_random(ab, sub, n_random=3, seed=1)
    direct = circuit_score(model, info, ds, circuit=set(info.components) - {head(0, 1), head(1, 2)}).score
    assert res["n_ablated"] == 2 and res["score"] == pytest.approx(direct, abs=1e-5)
    assert res["drop"] == pytest.approx(1 - direct, abs=1e-5)
    draws = matched_random_heads(info, [head(0, 1), head(1, 2)], None, 3, 1)
    brute = [1 - circuit_score(model, info, ds, circuit=set(info.components) - set(d)).score for d in draws]
    assert res["random_drops"] == pytest.approx(brute, abs=1e-5)
    assert res["random_drop"] == pytest.approx(sum(brute) / 3, abs=1e-5)
    assert ablation_vs_random(ab, [mlp(0)], n_random=3) == {
        "n_ablated": 0,
        "score": 1.0,
        "drop": 0.0,
        "random_drops": [],
        "random_drop": 0.0,
    }


def test_lost_at_by_hand():
    from seqcirc_utils.evaluation.compare import lost_at

    table = pd.DataFrame(
        {
            "task": ["a"] * 4 + ["b"] * 2 + ["c"] * 2,
            "threshold": [0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.5, 0.9],
            "shared": [2, 0, 1, 0, 3, 1, 0, 0],
        }
    )
    # a: 0 at 0.8 but 1 again at 0.7, so lost from 0.6; b never lost; c never had any (unsorted input)
    assert lost_at(table, "shared") == {"a": 0.6, "b": None, "c": 0.9}


def test_sharing_by_threshold_matches_overlap_and_direct_ablation(tiny_llama):
    from seqcirc_utils.evaluation.compare import ablation_vs_random, sharing_by_threshold
    from seqcirc_utils.scoring.ablation import Ablator

    model, info = tiny_llama
    data = {
        "ref": make_dataset(model.tokenizer, "digits", n=8, seed=0),
        "seq": make_dataset(model.tokenizer, "letters", template="comma", n=8, seed=0),
    }
    ablators = {k: Ablator(model, info, ds) for k, ds in data.items()}
    levels = {
        0.9: {"ref": {head(0, 1), head(1, 2), mlp(0)}, "seq": {head(0, 1), head(1, 0), mlp(0)}},
        0.5: {"ref": {head(1, 2)}, "seq": {mlp(0)}},
    }
    table = sharing_by_threshold(levels, ablators, "ref", n_random=2, seed=3)
    assert list(table["threshold"]) == [0.9, 0.5] and set(table["task"]) == {"seq"}
    top, low = table.iloc[0], table.iloc[1]
    assert (top["shared_heads"], top["shared_components"], top["shared"]) == (1, 2, "L0.H1")
    assert top["head_jaccard"] == pytest.approx(1 / 3) and top["jaccard"] == pytest.approx(2 / 4)
    assert (low["shared_heads"], low["head_jaccard"], low["jaccard"]) == (0, 0.0, 0.0)
    direct = ablation_vs_random(Ablator(model, info, data["seq"]), [head(0, 1), head(1, 2)], 2, 3)
    assert top["ref_in_task_drop"] == pytest.approx(direct["drop"], abs=1e-5)
    assert top["ref_in_task_random"] == pytest.approx(direct["random_drop"], abs=1e-5)
    brute = 1 - circuit_score(model, info, data["ref"], circuit=set(info.components) - {head(0, 1), head(1, 0)}).score
    assert top["task_in_ref_drop"] == pytest.approx(brute, abs=1e-5)
    assert low["task_in_ref_drop"] == 0.0 and low["task_in_ref_random"] == 0.0  # no heads to ablate


def test_score_against_random_only_where_asked(tiny_llama):
    from seqcirc_utils.evaluation.compare import score_against_random
    from seqcirc_utils.scoring.ablation import Ablator

    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    ablators = {
        "in": Ablator(model, info, ds),
        "held": Ablator(model, info, make_dataset(model.tokenizer, "digits", n=8, seed=1)),
    }
    table = score_against_random(info, {0.9: {head(0, 1)}}, ablators, n_random=2, n_resamples=20, random_on=["held"])
    by = table.set_index("data")
    assert by.loc["in", "n_random"] == 0 and pd.isna(by.loc["in", "random_mean"]) and not by.loc["in", "beats_random"]
    assert by.loc["held", "n_random"] == 2
    with pytest.raises(ParameterError, match="not among the data labels"):
        score_against_random(info, {0.9: {head(0, 1)}}, ablators, random_on=["other"])
