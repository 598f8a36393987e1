"""The Findings page's abstract: every headline claim against its null, in one table and one figure.

A :class:`Headline` is one claim a chapter makes against a null distribution: what is claimed, the effect
with its interval (over sequences, where the chapter measured one), the null it was compared with, the
number of null draws ``n_draws``, the observed value's percentile among them, the one-sided p-value, and
the split the effect was measured on. A headline cannot be made without ``n_draws`` and ``p``: a claim
that was not tested against a null is not a headline (the book test fails on a row without them).

The verdict is one rule (:func:`verdict`): ``p <= ALPHA`` beats the null, otherwise "not distinguishable
from its null" — and fewer than :data:`MIN_DRAWS` draws cannot support a headline (p could not go below
1 / (n + 1)), so such a row says "too few draws" whatever its p.

Each chapter's extractor (``*_headlines(files)``, keyed by file name like the Findings readers) reads its
typed records; :func:`abstract_markdown` renders the table and :func:`abstract_figure` the figure (each
claim's observed percentile within its null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd

from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.result_records import (
    ActivationEditing,
    DiscoveryMethods,
    GreaterThanOverlap,
    Knockout,
    Representations,
    Robustness,
    SharedByThreshold,
)
from seqcirc_utils.evaluation.nulls import lower_tail_p
from seqcirc_utils.report.plots import Figure, Figures

#: The one-sided level at which a claim beats its null.
ALPHA = 0.05
#: The fewest null draws a headline needs (so that p can reach 0.01).
MIN_DRAWS = 99
BEATS = "beats its null"
NOT_DISTINGUISHABLE = "not distinguishable from its null"
TOO_FEW = "too few draws"


@dataclass(frozen=True)
class Headline:
    """One claim against its null.

    ``chapter``: the notebook stem (``10_knockout``); ``claim``: the claim in words; ``effect``: the observed
    value in ``unit`` with ``interval`` its 95 % interval (``None`` where the chapter measured none);
    ``null``: what the null draws are; ``n_draws``: their number; ``percentile``: the observed value's
    percentile among them (in the claim's direction: 100 = beyond every draw); ``p``: the one-sided p-value
    ``(1 + #{draws at least as extreme}) / (n_draws + 1)``; ``split``: the data the effect was measured on.
    """

    chapter: str
    claim: str
    effect: float
    unit: str
    interval: tuple[float, float] | None
    null: str
    n_draws: int
    percentile: float
    p: float
    split: str

    def __post_init__(self) -> None:
        if not isinstance(self.n_draws, int) or self.n_draws < 1:
            raise ValueError(f"a headline needs the number of null draws; got n_draws={self.n_draws!r}")
        if not (isinstance(self.p, float | int) and 0 < self.p <= 1):
            raise ValueError(f"a headline needs a p-value in (0, 1]; got p={self.p!r}")

    @property
    def verdict(self) -> str:
        """:func:`verdict` of this claim."""
        return verdict(self.p, self.n_draws)

    def effect_text(self) -> str:
        """``"3.1 [2.0, 4.2] points"``: the effect, its interval where measured, its unit."""
        text = _number(self.effect)
        if self.interval is not None:
            text += f" [{_number(self.interval[0])}, {_number(self.interval[1])}]"
        return f"{text} {self.unit}".strip()


def verdict(p: float, n_draws: int) -> str:
    """The one verdict rule: too few draws (< :data:`MIN_DRAWS`), else beats its null when ``p <= ALPHA``,
    else not distinguishable from it."""
    if n_draws < MIN_DRAWS:
        return TOO_FEW
    return BEATS if p <= ALPHA else NOT_DISTINGUISHABLE


def _number(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _split(null: NullDistribution, data: str) -> str:
    """``"numbers held-out: 24 prompts, 12 sequences"``."""
    sizes = []
    if null.n_prompts is not None:
        sizes.append(f"{null.n_prompts} prompts")
    if null.n_clusters is not None:
        sizes.append(f"{null.n_clusters} sequences")
    return f"{data}: {', '.join(sizes)}" if sizes else data


def _upper(null: NullDistribution) -> tuple[float, float]:
    """(percentile, p) of an observed value claimed *above* its null (the record's own)."""
    return null.observed_percentile, null.p_value


def _lower(null: NullDistribution) -> tuple[float, float]:
    """(percentile, p) of an observed value claimed *below* its null (100 = below every draw)."""
    return 100.0 - null.observed_percentile, lower_tail_p(null)


def _interval(value: Any) -> tuple[float, float] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    lo, hi = value
    return float(lo), float(hi)


def _against(
    null: NullDistribution,
    chapter: str,
    claim: str,
    unit: str,
    baseline: str,
    data: str,
    interval: tuple[float, float] | None = None,
    lower: bool = False,
) -> Headline:
    """The headline of a claim read off its ``null`` record: the observed value as the effect, the tail's percentile
    and p (``lower``: the claim is that the value lies *below* its null), ``baseline`` naming the null's draws and
    ``data`` the split (with the record's prompt and sequence counts)."""
    percentile, p = _lower(null) if lower else _upper(null)
    return Headline(
        chapter=chapter,
        claim=claim,
        effect=null.observed,
        unit=unit,
        interval=interval,
        null=baseline,
        n_draws=null.n_draws,
        percentile=percentile,
        p=p,
        split=_split(null, data),
    )


# --------------------------------------------------------------------------- one extractor per chapter


def shared_circuits_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """02: the circuit shared by all tasks at the null's threshold, on each task's held-out prompts, against
    random circuits matched per layer (normalised faithfulness)."""
    obj: SharedByThreshold | None = files.get(SharedByThreshold.file)
    if obj is None or not obj.nulls:
        return []
    return [
        _against(
            null,
            "02_shared_circuits",
            f"the {len(null.circuit)} components shared by all tasks at {100 * obj.null_threshold:.0f} % carry the "
            f"{null.task} task",
            "normalised faithfulness",
            f"random circuits matched per layer ({null.null_mean:.2f} on average)",
            data,
        )
        for data, null in obj.nulls.items()
    ]


def greater_than_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """03: ablating one task's circuit heads costs the other task more than ablating matched random heads
    (the score of everything but those heads, lower tail)."""
    obj: GreaterThanOverlap | None = files.get(GreaterThanOverlap.file)
    if obj is None or not obj.nulls:
        return []
    return [
        _against(
            null,
            "03_greater_than_overlap",
            f"ablating the {name} costs more than ablating matched random heads",
            "score (fraction of the full model kept)",
            f"as many random heads of the same layers ablated ({null.null_mean:.2f} kept on average)",
            f"{null.task} prompts" if null.task else "prompts",
            lower=True,
        )
        for name, null in obj.nulls.items()
    ]


def robustness_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """09: circuits re-found on other seeds' prompts (the headline configuration) overlap more than random circuits
    of the same make-up (mean pairwise Jaccard; matched per layer)."""
    obj: Robustness | None = files.get(Robustness.file)
    if obj is None:
        return []
    out = []
    for task, j in obj.jaccard.items():
        if not j:
            continue
        runs = (obj.stability.get(task) or {}).get("n_runs")
        out.append(
            Headline(
                chapter="09_robustness",
                claim=f"{task} circuits re-found on other seeds' prompts overlap more than chance",
                effect=float(j["observed"]),
                unit="mean pairwise Jaccard",
                interval=None,
                null=f"random circuits of the same make-up, matched per layer ({float(j['null_mean']):.2f} on average)",
                n_draws=int(j["n_draws"]),
                percentile=float(j["observed_percentile"]),
                p=float(j["p_value"]),
                split=f"{task}: {runs} seeds' discovery splits" if runs else f"{task} discovery splits",
            )
        )
    return out


def knockout_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """10: knocking out the successor heads (chosen on selection prompts) drops each task's logit difference on
    evaluation prompts more than same-layer random knockouts."""
    obj: Knockout | None = files.get(Knockout.file)
    if obj is None:
        return []
    intervals = {r["task"]: _interval(r.get("ci95")) for r in obj.knockout_intervals}
    return [
        _against(
            null,
            "10_knockout",
            f"knocking out the successor heads ({' '.join(obj.successor_heads)}) hurts {task}",
            "points of logit difference lost",
            f"same-layer random heads knocked out ({null.null_mean:.2f} on average)",
            f"{task} evaluation split",
            interval=intervals.get(task),
        )
        for task, null in obj.knockout_null.items()
    ]


def activation_editing_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """11: replacing the successor heads' outputs by their mean on decreasing prompts turns the answer into the
    predecessor more often than the same edit of random heads of the same layers; adding the format direction
    (at the alpha fixed in advance) turns the answer into the other format more often than each baseline kind
    with several draws of the same norm (hit rates, evaluation split). A single baseline direction (the unrelated
    difference of means) is a reference, not a null, and makes no headline."""
    obj: ActivationEditing | None = files.get(ActivationEditing.file)
    if obj is None:
        return []
    intervals = {r["task"]: _interval(r.get("hit_ci95")) for r in obj.function_edits if r["edit"] == "successor heads"}
    heads = " ".join(obj.successor_heads)
    # (null, claim, baseline, data, interval) of each claim: the edits, then the steering pairs
    claims = [
        (
            null,
            f"editing the successor heads ({heads}) turns {task} answers into the predecessor",
            "the same edit of random heads of the same layers",
            task,
            intervals.get(task),
        )
        for task, null in obj.edit_null.items()
    ] + [
        (
            null,
            f"adding the format direction ({e['pair']}, alpha {obj.steer_alpha:g}) turns answers into the other "
            f"format more often than {kind} directions",
            f"{kind} directions of the same norm",
            e["pair"].split(" -> ")[0],
            _interval(e.get("hit_ci95")),
        )
        for e in obj.steering_effects
        for kind, null in obj.steering_null.get(e["pair"], {}).items()
        if null.n_draws > 1
    ]
    return [
        _against(
            null,
            "11_activation_editing",
            claim,
            "hit rate",
            f"{baseline} ({null.null_mean:.2f} on average)",
            f"{task} evaluation split",
            interval=interval,
        )
        for null, claim, baseline, task, interval in claims
    ]


#: 12's claims: null key in ``Representations.nulls`` -> the claim.
REPRESENTATION_CLAIMS = {
    "value_gap_selected": "the same value in different formats is more alike than different values",
    "step_cosine_selected": "the value-step direction points the same way across formats",
}


def representations_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """12: the residual stream's value and step statistics at the depth chosen on selection prompts, and the
    ordered-vs-shuffled probe per format (maximum over depths), against permutation nulls (evaluation split)."""
    obj: Representations | None = files.get(Representations.file)
    if obj is None:
        return []
    claims = [(key, claim) for key, claim in REPRESENTATION_CLAIMS.items() if key in obj.nulls]
    claims += [
        (key, f"{key.split('/', 1)[1]} prompts are told from shuffled twins (last member kept; best depth)")
        for key in obj.nulls
        if key.startswith("order_max/")
    ]
    return [
        _against(
            obj.nulls[key],
            "12_representations",
            claim,
            obj.nulls[key].statistic.replace("_", " "),
            "labels permuted" + (", maximum over depths" if "max" in key else ""),
            "evaluation split",
        )
        for key, claim in claims
    ]


def discovery_methods_headlines(files: Mapping[str, Any]) -> list[Headline]:
    """13: each discovery method's node ranking (chosen on discovery prompts) against random rankings on a task's
    held-out prompts, by CPR (the area under its faithfulness curve; upper tail). The ``random`` method is one
    of the null's draws, not a claim, and is left out."""
    obj: DiscoveryMethods | None = files.get(DiscoveryMethods.file)
    if obj is None or not obj.nulls:
        return []
    return [
        _against(
            null,
            "13_discovery_methods",
            f"the {method} method's ranking beats random rankings on {task}",
            "CPR (area under the faithfulness curve)",
            f"random rankings of the heads and MLPs ({null.null_mean:.2f} on average)",
            f"{task} held-out split",
        )
        for task, by in obj.nulls.items()
        for method, null in by.get("cpr", {}).items()
        if method != "random"
    ]


# --------------------------------------------------------------------------- the table and the figure


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def abstract_markdown(headlines: Sequence[Headline], links: Mapping[str, str] | None = None) -> str:
    """The abstract table in Markdown: claim, effect [interval], null, n, percentile, p, split, verdict.

    ``links``: chapter stem -> the document the claim links to (``/book/executed/10_knockout``, a MyST ``{doc}``
    target)."""
    if not headlines:
        return "*No claim was tested against a null in this build.*"
    header = "| claim | effect [95 % interval] | null | n | percentile | p | measured on | verdict |"
    rows = [header, "|" + "---|" * 8]
    for h in headlines:
        claim = _cell(h.claim)
        if links and h.chapter in links:
            claim = f"{{doc}}`{claim.replace('`', '')} <{links[h.chapter]}>`"
        rows.append(
            f"| {claim} | {_cell(h.effect_text())} | {_cell(h.null)} | {h.n_draws} | {h.percentile:.0f} | "
            f"{h.p:.3f} | {_cell(h.split)} | {h.verdict} |"
        )
    return "\n".join(rows)


def abstract_frame(headlines: Sequence[Headline]) -> pd.DataFrame:
    """``DataFrame[claim, chapter, percentile, p, n_draws, verdict]``: what :func:`abstract_figure` draws."""
    return pd.DataFrame(
        [
            {
                "claim": h.claim,
                "chapter": h.chapter[:2],
                "percentile": h.percentile,
                "p": h.p,
                "n_draws": h.n_draws,
                "verdict": h.verdict,
            }
            for h in headlines
        ],
        columns=["claim", "chapter", "percentile", "p", "n_draws", "verdict"],
    )


def abstract_figure(headlines: Sequence[Headline], figures: Figures | None = None) -> Figure:
    """Each claim's observed percentile within its null (100 = beyond every draw), coloured by verdict, with
    the line a claim must pass at ``ALPHA``."""
    frame = abstract_frame(headlines)
    frame["label"] = frame["chapter"] + " · " + frame["claim"].str.slice(0, 70)
    dots = (
        alt.Chart(frame)
        .mark_circle(size=90)
        .encode(
            x=alt.X(
                "percentile:Q", title="observed value's percentile within its null", scale=alt.Scale(domain=[0, 100])
            ),
            y=alt.Y("label:N", title=None, sort=None),
            color=alt.Color(
                "verdict:N",
                scale=alt.Scale(domain=[BEATS, NOT_DISTINGUISHABLE, TOO_FEW], range=["#1b7837", "#b2182b", "#999999"]),
            ),
            tooltip=["claim", "percentile", "p", "n_draws", "verdict"],
        )
    )
    line = alt.Chart(pd.DataFrame({"x": [100 * (1 - ALPHA)]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    chart = (line + dots).properties(width=420, height=alt.Step(22))
    return (figures or Figures()).figure(
        chart,
        f"Every headline claim against its null: where the observed value falls among the null's draws. A claim "
        f"right of the dashed line (the {100 * (1 - ALPHA):.0f}th percentile) beats its null at p <= {ALPHA}; grey "
        f"claims have fewer than {MIN_DRAWS} draws.",
    )
