"""The Findings page's abstract: headline claims against their nulls (report.headlines, report.findings)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from record_fixtures import discovery_methods, example, row

from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.result_records import GreaterThanOverlap, Knockout
from seqcirc_utils.core.results import write_json_atomic
from seqcirc_utils.evaluation.nulls import null_summary
from seqcirc_utils.report.findings import UNREADABLE, ChapterStatus, findings_markdown
from seqcirc_utils.report.headlines import (
    BEATS,
    MIN_DRAWS,
    NOT_DISTINGUISHABLE,
    TOO_FEW,
    Headline,
    abstract_markdown,
    discovery_methods_headlines,
    greater_than_headlines,
    knockout_headlines,
    verdict,
)


def null_of(observed: float, draws, task: str = "digits", **more) -> NullDistribution:
    draws = [float(x) for x in draws]
    s = null_summary(observed, draws)
    return NullDistribution(
        statistic="score",
        observed=observed,
        null_mean=s["null_mean"],
        null_p5=s["null_p5"],
        null_p50=s["null_p50"],
        null_p95=s["null_p95"],
        n_draws=s["n_draws"],
        observed_percentile=s["observed_percentile"],
        p_value=s["p_value"],
        matched={"heads_per_layer": {}},
        seed=0,
        null=draws,
        circuit=["L0.H1"],
        task=task,
        **more,
    )


def headline(**values) -> Headline:
    base = dict(
        chapter="10_knockout",
        claim="c",
        effect=1.0,
        unit="points",
        interval=None,
        null="random",
        n_draws=99,
        percentile=99.0,
        p=0.01,
        split="evaluation",
    )
    return Headline(**(base | values))


def test_a_headline_needs_n_and_p():
    with pytest.raises(ValueError, match="n_draws"):
        headline(n_draws=None)
    with pytest.raises(ValueError, match="n_draws"):
        headline(n_draws=0)
    with pytest.raises(ValueError, match="p-value"):
        headline(p=None)
    with pytest.raises(ValueError, match="p-value"):
        headline(p=0.0)


def test_one_verdict_rule():
    assert verdict(0.01, MIN_DRAWS) == BEATS
    assert verdict(0.05, 199) == BEATS
    assert verdict(0.06, MIN_DRAWS) == NOT_DISTINGUISHABLE
    assert verdict(0.1, 9) == TOO_FEW and verdict(0.001, MIN_DRAWS - 1) == TOO_FEW  # p cannot reach 0.01


def test_knockout_headline_reads_the_null_and_the_sequence_interval():
    rng = np.random.default_rng(0)
    draws = rng.normal(1.0, 0.5, size=99)
    observed = 2.0
    obj = example(
        Knockout,
        successor_heads=["L2.H1"],
        knockout_null={"digits": null_of(observed, draws, n_prompts=20, n_clusters=10)},
        knockout_intervals=[row(Knockout, "knockout_intervals", task="digits", drop_points=observed, ci95=[1.5, 2.6])],
    )
    (h,) = knockout_headlines({Knockout.file: obj})
    brute_p = (1 + sum(d >= observed for d in draws)) / 100
    brute_percentile = 100 * sum(d < observed for d in draws) / 99
    assert h.p == pytest.approx(brute_p) and h.percentile == pytest.approx(brute_percentile)
    assert h.interval == (1.5, 2.6) and h.n_draws == 99
    assert h.split == "digits evaluation split: 20 prompts, 10 sequences"
    assert h.effect_text() == "2.00 [1.50, 2.60] points of logit difference lost"
    assert h.verdict == (BEATS if brute_p <= 0.05 else NOT_DISTINGUISHABLE)


def test_an_ablation_claim_uses_the_lower_tail():
    draws = [0.9, 0.8, 0.7, 0.95, 0.85] * 20  # 100 draws of the score kept after ablating random heads
    observed = 0.75  # ablating the circuit's heads keeps less: claimed below the null
    obj = example(GreaterThanOverlap, n_draws=100, nulls={"digits heads on greater_than": null_of(observed, draws)})
    (h,) = greater_than_headlines({GreaterThanOverlap.file: obj})
    assert h.p == pytest.approx((1 + sum(d <= observed for d in draws)) / 101)  # 21 / 101
    assert h.percentile == pytest.approx(100 - 100 * sum(d < observed for d in draws) / 100)  # 80
    assert h.verdict == NOT_DISTINGUISHABLE


def test_findings_open_with_the_abstract_table(tmp_path):
    results = tmp_path / "smollm2-135m"
    draws = list(np.linspace(0.0, 1.0, 99))
    good = example(
        Knockout,
        successor_heads=["L2.H1"],
        tasks=["digits"],
        knockout_null={"digits": null_of(5.0, draws, n_prompts=8, n_clusters=4)},
        knockout_intervals=[],
    )
    write_json_atomic(results / Knockout.file, good)
    statuses = [ChapterStatus("10_knockout", "Knockout", executed=True)]
    text = findings_markdown(statuses, results)
    assert text.startswith("## At a glance")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| claim |") and len(table) == 2
    cells = [c.strip() for c in table[1].strip("|").split("|")]
    n, p = int(cells[3]), float(cells[5])
    assert n == 99 and p == pytest.approx(1 / 100) and cells[-1] == BEATS
    assert "{doc}`knocking out the successor heads (L2.H1) hurts digits </book/executed/10_knockout>`" in cells[0]
    assert re.search(r'<figure class="seqcirc-figure"', text)  # the summary figure
    assert text.index("## At a glance") < text.index("## Chapter by chapter")

    # a record whose null lacks what a headline needs is reported, not dropped
    bad = good.to_json()
    bad["knockout_null"]["digits"]["p_value"] = None
    write_json_atomic(results / Knockout.file, bad)
    assert UNREADABLE in findings_markdown(statuses, results).split("## Chapter by chapter")[0]


def test_abstract_without_claims_says_so():
    assert "No claim" in abstract_markdown([])


def test_editing_and_representation_headlines_read_their_nulls():
    from seqcirc_utils.core.result_records import ActivationEditing, Representations
    from seqcirc_utils.report.headlines import activation_editing_headlines, representations_headlines

    draws = [0.0] * 90 + [0.5] * 9  # 99 random head sets
    edit = example(
        ActivationEditing,
        successor_heads=["L3.H1"],
        edit_null={"digits": null_of(0.6, draws, n_prompts=15, n_clusters=3)},
        function_edits=[
            row(
                ActivationEditing, "function_edits", task="digits", edit="successor heads", hit=0.6, hit_ci95=[0.2, 0.9]
            ),
            row(ActivationEditing, "function_edits", task="digits", edit="random heads 0", hit=0.0, hit_ci95=[0, 0]),
        ],
    )
    (h,) = activation_editing_headlines({ActivationEditing.file: edit})
    assert h.p == pytest.approx(1 / 100) and h.interval == (0.2, 0.9) and h.verdict == BEATS
    halves = list(np.linspace(0.0, 0.8, 99))  # the observed 0.7 lies among them
    steering = dataclasses.replace(
        edit,
        edit_null={},
        steer_alpha=1.0,
        steering_effects=[
            row(ActivationEditing, "steering_effects", pair="digits -> months", hit=0.7, hit_ci95=[0.4, 0.9])
        ],
        steering_null={
            "digits -> months": {
                "random halves": null_of(0.7, halves, n_prompts=15, n_clusters=3),
                "gaussian": null_of(0.7, [0.0] * 99, n_prompts=15, n_clusters=3),
                "unrelated (decreasing - increasing)": null_of(0.7, [0.1]),  # one direction: no headline
            }
        },
    )
    by_kind = {
        h.null.split(" directions")[0]: h for h in activation_editing_headlines({ActivationEditing.file: steering})
    }
    assert set(by_kind) == {"random halves", "gaussian"}
    brute = (1 + sum(x >= 0.7 for x in halves)) / 100
    assert (
        by_kind["random halves"].p == pytest.approx(brute) and by_kind["random halves"].verdict == NOT_DISTINGUISHABLE
    )
    assert by_kind["gaussian"].p == pytest.approx(1 / 100) and by_kind["gaussian"].verdict == BEATS
    assert by_kind["gaussian"].interval == (0.4, 0.9) and "digits evaluation split" in by_kind["gaussian"].split
    rep = example(
        Representations,
        nulls={
            "value_gap_selected": null_of(0.3, np.linspace(0, 0.4, 99)),
            "order_max/months": null_of(0.9, np.linspace(0.4, 0.95, 99)),
            "value_gap_max": null_of(0.5, np.linspace(0, 0.4, 99)),  # not a headline of its own
        },
    )
    hs = representations_headlines({Representations.file: rep})
    assert [h.claim.split()[0] for h in hs] == ["the", "months"]
    brute = (1 + sum(x >= 0.3 for x in np.linspace(0, 0.4, 99))) / 100
    assert hs[0].p == pytest.approx(brute) and hs[0].verdict == NOT_DISTINGUISHABLE


def test_discovery_methods_headline_is_the_cpr_against_random_rankings():
    from seqcirc_utils.core.result_records import DiscoveryMethods

    record = discovery_methods()
    got = discovery_methods_headlines({DiscoveryMethods.file: record})
    assert [h.claim for h in got] == ["the fast method's ranking beats random rankings on months"]  # random: no claim
    (h,) = got
    null = record.nulls["months"]["cpr"]["fast"]
    assert h.effect == null.observed and h.p == null.p_value == pytest.approx(0.01) and h.n_draws == 99
    assert h.verdict == BEATS and h.percentile == 100.0 and "3 sequences" in h.split
    assert discovery_methods_headlines({DiscoveryMethods.file: discovery_methods(nulls={})}) == []
    assert discovery_methods_headlines({}) == []
