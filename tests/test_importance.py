"""head_importance: attribution estimates for every head, exact single-head ablation for the largest."""

from __future__ import annotations

import math

import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import parse_component
from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.scoring.ablation import Ablator, circuit_score
from seqcirc_utils.scoring.attribution import attribution_scores
from seqcirc_utils.scoring.importance import estimated_drops, head_importance
from seqcirc_utils.tasks.datasets import make_dataset


def test_exact_drops_of_the_largest_estimates_match_full_pass_scores(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=12, seed=3)
    table = head_importance(model, info, ds, exact_top=3, progress=False)
    assert list(table["component"]) == [str(h) for h in info.heads]
    checked = table[table["exact"]]
    # The checked heads are the three largest |estimates|.
    assert set(checked["component"]) == set(table.loc[table["estimated_drop"].abs().nlargest(3).index, "component"])
    assert table.loc[~table["exact"], "drop_points"].isna().all()
    # Exact drop, independently: score of the circuit "everything but this head" by full forward passes.
    everything = set(info.components)
    for row in checked.itertuples():
        kept = circuit_score(model, info, ds, circuit=everything - {parse_component(row.component)}).score
        assert row.drop_points == pytest.approx(100 * (1 - kept), abs=1e-3)
    # Estimate = first-order change of the metric, in points of the full metric.
    full = circuit_score(model, info, ds, circuit=everything).full_metric
    attr = attribution_scores(Ablator(model, info, ds), info.heads)
    for row in table.itertuples():
        assert row.estimated_drop == pytest.approx(-100 * attr[row.component] / full, rel=1e-5, abs=1e-6)


def test_exact_top_zero_and_bad_values(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=8, seed=1)
    table = head_importance(model, info, ds, exact_top=0, progress=False)
    assert not table["exact"].any() and table["drop_points"].isna().all()
    with pytest.raises(ParameterError, match="exact_top must be >= 0"):
        head_importance(model, info, ds, exact_top=-1)


@pytest.mark.embedded
def test_embedded_digits_estimates_find_heads_that_matter(smollm):
    """On SmolLM2 the estimate points at heads whose exact ablation costs real behaviour."""
    model, info = smollm
    ds = discovery_dataset(model, "smollm2-135m", "digits", template="among_words", n=16, seed=0)
    table = head_importance(model, info, ds, exact_top=6, progress=False)
    checked = table[table["exact"]].sort_values("drop_points", ascending=False)
    assert checked["drop_points"].iloc[0] > 5  # some single head costs over 5 points of the logit difference
    # The estimate has the exact drop's sign for the checked heads that matter (|exact drop| > 2 points).
    big = checked[checked["drop_points"].abs() > 2]
    assert len(big) >= 2
    assert (big["drop_points"] * big["estimated_drop"] > 0).mean() >= 0.75
    # The estimate is a real per-head quantity, not a constant.
    est = estimated_drops(model, info, ds)
    assert len(est) == len(info.heads) and est.std() > 0 and not any(math.isnan(v) for v in est)
