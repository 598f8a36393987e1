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
