import pytest

from seqcirc_utils.ablation import circuit_score
from seqcirc_utils.compare import (
    analogous_ablation, circuits_from_records, cross_task_scores, membership_matrix, overlap_table, shared_components,
)
from seqcirc_utils.tasks import make_dataset
from seqcirc_utils.types import head, mlp


def test_overlap_by_hand():
    circuits = circuits_from_records({
        "digits": {"heads": [[0, 1], [1, 2]], "mlps": [0]},
        "words": {"heads": [[0, 1], [1, 3]], "mlps": [0, 1]},
    })
    row = overlap_table(circuits).iloc[0]
    assert (row["intersection"], row["union"]) == (2, 5) and row["jaccard"] == pytest.approx(0.4)
    assert shared_components(circuits) == [head(0, 1), mlp(0)]
    assert shared_components(circuits, kind="head") == [head(0, 1)]
    m = membership_matrix(circuits)
    assert m.loc["L1.H3"].tolist() == [False, True] and m.shape == (5, 2)


def test_cross_task_and_analogous_ablation_match_direct_scores(tiny_llama):
    model, info = tiny_llama
    data = {"digits": make_dataset(model.tokenizer, "digits", n=8, seed=0),
            "letters": make_dataset(model.tokenizer, "letters", template="comma", n=8, seed=0)}
    circuits = {"a": frozenset({head(0, 1), mlp(1)}), "b": frozenset({head(1, 2)})}
    table = cross_task_scores(model, info, circuits, data)
    for c, comps in circuits.items():
        for d, ds in data.items():
            assert table.loc[c, d] == pytest.approx(circuit_score(model, info, ds, circuit=comps).score)
    res = analogous_ablation(model, info, data["digits"], [head(0, 1)])
    assert res["before"] == pytest.approx(1.0)
    direct = circuit_score(model, info, data["digits"], circuit=set(info.components) - {head(0, 1)}).score
    assert res["after"] == pytest.approx(direct) and res["drop"] == pytest.approx(1.0 - direct)


def test_matched_random_heads_match_size_place_and_seed(tiny_llama):
    from seqcirc_utils.compare import matched_random_heads

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
