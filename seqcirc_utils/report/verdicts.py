"""Chapter verdicts: what a chapter's numbers say, computed once from its typed result record.

Each chapter's closing prose and its paragraph on the Findings page (:mod:`seqcirc_utils.report.findings`) call
the same function here, so the two cannot disagree: the chapter builds its record, writes it, and displays
``Markdown(verdict(record))``; the Findings page reads the file back and calls the same function (or its short
form). The verdict rules (which transfer counts as "reused", which head counts as same-type) live only here.

- 01, behaviour: :func:`behaviour_summary`, :func:`behaviour_verdict`.
- 02 / 03, sharing: :func:`chance_phrase` (an overlap beside the overlap expected by chance), :func:`control_verdict`
  (the sequence tasks against the control task).
- 04, decreasing circuits: :func:`direction_pairs`, :func:`decreasing_verdict`; step-k: :func:`step_k_verdict`.
- 06, induction offsets: :func:`induction_verdicts`, :func:`induction_verdict_markdown`,
  :func:`induction_headline`.
- 12, representations: :func:`representation_headline` (the numbers the Findings page reads).
- Every chapter in smoke mode: :func:`smoke_note` (a sentence, not a printed banner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pandas as pd

from seqcirc_utils.core.options import GREATER_THAN
from seqcirc_utils.core.result_records import (
    DecreasingCircuits,
    InductionOffsets,
    StepKCircuits,
)
from seqcirc_utils.core.types import parse_component


def _pct(x: float) -> str:
    return f"{x:.0f} %"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- smoke mode


class Note:
    """A Markdown sentence for a chapter's output (``_repr_markdown_``), e.g. the smoke-mode note."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__  # the plain-text output (logs, tests) reads the sentence too


def smoke_note(sizes: str) -> Note:
    """The smoke-mode note a chapter shows instead of a printed banner: ``sizes`` says what was shrunk
    (``"16 prompts, lengths [5]"``)."""
    return Note(f"> **Smoke mode** ({sizes}): tiny sizes for testing the book; the numbers below are not results.")


# --------------------------------------------------------------------------- 01: behaviour


@dataclass(frozen=True)
class BehaviourSummary:
    """01's verdict numbers from the behaviour rows that could be built (``n > 0``): increasing sequence
    combinations (greater-than left out), decreasing ones, the best and hardest increasing combination,
    the greater-than probability difference (None without greater-than rows) and the rows not built."""

    increasing: list[dict]
    decreasing: list[dict]
    best: dict | None
    hardest: dict | None
    greater_than_pd: float | None
    n_unbuilt: int

    @staticmethod
    def _mean(rows: Sequence[dict]) -> float | None:
        return sum(r["top1_accuracy"] for r in rows) / len(rows) if rows else None

    @property
    def increasing_accuracy(self) -> float | None:
        """Mean top-1 accuracy (0..1) over the increasing combinations."""
        return self._mean(self.increasing)

    @property
    def decreasing_accuracy(self) -> float | None:
        """Mean top-1 accuracy (0..1) over the decreasing combinations."""
        return self._mean(self.decreasing)

    @property
    def decreasing_harder(self) -> bool | None:
        """Decreasing combinations have the lower mean top-1 accuracy (None when one side is missing)."""
        inc, dec = self.increasing_accuracy, self.decreasing_accuracy
        return None if inc is None or dec is None else dec < inc


def behaviour_summary(rows: Sequence[dict]) -> BehaviourSummary:
    """:class:`BehaviourSummary` of the behaviour table's rows (``task, template, direction, n, top1_accuracy,
    prob_diff``)."""
    built = [r for r in rows if r["n"]]
    inc = [r for r in built if r["direction"] == "increasing" and r["task"] != "greater_than"]
    dec = [r for r in built if r["direction"] == "decreasing"]
    gt = [r for r in built if r["task"] == "greater_than" and r.get("prob_diff") is not None]
    return BehaviourSummary(
        inc,
        dec,
        max(inc, key=lambda r: r["top1_accuracy"]) if inc else None,
        min(inc, key=lambda r: r["top1_accuracy"]) if inc else None,
        float(gt[0]["prob_diff"]) if gt else None,
        len(rows) - len(built),
    )


def behaviour_verdict(rows: Sequence[dict]) -> str:
    """01's closing Markdown list: best and hardest increasing combination, increasing against decreasing mean
    accuracy (and whether decreasing is harder), the greater-than PD, the combinations not built."""
    b = behaviour_summary(rows)
    lines = []
    if b.best is not None and b.hardest is not None:
        lines.append(
            f"- Best increasing combination: **{b.best['task']} / {b.best['template']}**, top-1 accuracy "
            f"{100 * b.best['top1_accuracy']:.0f} %, mean p(correct) {b.best['p_correct']:.2f}."
        )
        lines.append(
            f"- Hardest increasing combination: **{b.hardest['task']} / {b.hardest['template']}**, top-1 "
            f"accuracy {100 * b.hardest['top1_accuracy']:.0f} %."
        )
    if b.decreasing_harder is not None:
        lines.append(
            f"- Mean top-1 accuracy, increasing {100 * b.increasing_accuracy:.0f} % vs decreasing "
            f"{100 * b.decreasing_accuracy:.0f} %: decreasing sequences are "
            + ("harder for this model." if b.decreasing_harder else "not harder for this model.")
        )
    if b.greater_than_pd is not None:
        lines.append(
            f"- Greater-than probability difference: {100 * b.greater_than_pd:.1f} % (GPT-2 small: 81.7 %, "
            "Hanna et al.)."
        )
    if b.n_unbuilt:
        lines.append(f"- {b.n_unbuilt} combinations could not be built for this tokenizer (see the `error` column).")
    return "\n".join(lines) if lines else "No combination could be evaluated."


# --------------------------------------------------------------------------- 02 / 03: sharing against chance


def chance_phrase(row: Any, noun: str = "component", column: str | None = None) -> str:
    """An observed overlap beside its sharing null: ``"3 components (chance 1.2 [0, 3], p = 0.040)"``. ``row``: a
    row of ``evaluation.nulls.sharing_null`` (``observed, expected, null_lo, null_hi, p``), or with ``column`` a
    row of ``evaluation.compare.sharing_by_threshold`` (``<column>, <column>_expected, <column>_lo, <column>_hi,
    <column>_p``, e.g. ``column="shared_heads"``)."""
    keys = (
        ("observed", "expected", "null_lo", "null_hi", "p")
        if column is None
        else (column, *(f"{column}_{k}" for k in ("expected", "lo", "hi", "p")))
    )
    observed, expected, lo, hi, p = (row[k] for k in keys)
    return (
        f"{_count(int(observed), noun)} (chance {float(expected):.1f} [{float(lo):.0f}, {float(hi):.0f}], "
        f"p = {float(p):.3f})"
    )


def control_verdict(ref: dict | None, threshold: float | None = None, alpha: float = 0.05) -> str:
    """The control task's reference for "the sequence tasks share more than any two tasks do", in words, from
    ``evaluation.compare.control_comparison``'s dict (``""`` without one). Overlap is read beyond chance
    (observed - expected components); the verdict holds only when every pair of sequence tasks (found the same way
    as the control) shares more beyond chance than any sequence task shares with the control."""
    if not ref:
        return ""
    at = f" at {_pct(100 * threshold)}" if threshold is not None else ""
    control, n_pairs, n_control = ref["control"], int(ref["task_pairs"]), int(ref["control_pairs"])
    if n_control == 0:
        return f"No sequence task was found the same way as the control ({control}): no reference."
    text = (
        f"Against the control ({control}; compared with {', '.join(ref['tasks'])}, found the same way){at}, a "
        f"sequence task shares {ref['control_excess_mean']:+.1f} components with the control beyond chance on "
        f"average (at most {ref['control_excess_max']:+.1f}; {ref['control_pairs_above_chance']} of {n_control} "
        f"pairs above chance, p <= {alpha})"
    )
    if n_pairs:
        text += (
            f", two sequence tasks share {ref['task_excess_mean']:+.1f} ({ref['task_pairs_above_chance']} of "
            f"{n_pairs} pairs above chance)"
        )
    text += "."
    cross = [ref.get(k) for k in ("cross_between_tasks", "cross_tasks_on_control", "cross_control_on_tasks")]
    if all(v is not None for v in cross):
        text += (
            f" A sequence circuit keeps {_pct(cross[0])} of the full logit difference on another sequence task's data "
            f"and {_pct(cross[1])} on the control's; the control's circuit keeps {_pct(cross[2])} on the sequence "
            "tasks' data."
        )
    elif cross[1] is not None and cross[2] is not None:
        text += (
            f" The sequence circuits keep {_pct(cross[1])} of the full logit difference on the control's data; the "
            f"control's circuit keeps {_pct(cross[2])} on the sequence tasks' data."
        )
    if not n_pairs:
        return text + " With one sequence task found this way there is no pair of sequence tasks to compare."
    above = int(ref["task_pairs_above_control"])
    if above == n_pairs:
        return text + (
            " Every pair of sequence tasks shares more beyond chance than any sequence task shares with the control: "
            "the sequence tasks share more than any two tasks do."
        )
    if above == 0:
        return text + (
            " No pair of sequence tasks shares more beyond chance than the most a sequence task shares with the "
            "control: **the sequence tasks do not share more than any two tasks do** in this run."
        )
    return text + (
        f" Only {above} of {n_pairs} pairs of sequence tasks share more beyond chance than the most a sequence task "
        "shares with the control: the claim holds for those pairs, **not for the sequence tasks as a whole**."
    )


# --------------------------------------------------------------------------- 04: decreasing circuits


@dataclass(frozen=True)
class DirectionPair:
    """The increasing and decreasing circuits of one task and length: head Jaccard and the transfer both ways
    (% of the full model's logit difference on the other direction's data)."""

    task: str
    length: int
    increasing: str  # config names
    decreasing: str
    head_jaccard: float
    increasing_on_decreasing: float | None
    decreasing_on_increasing: float | None
    threshold_percent: float

    @property
    def reused(self) -> bool:
        """Each circuit keeps at least the discovery threshold on the other direction's data."""
        both = (self.increasing_on_decreasing, self.decreasing_on_increasing)
        return all(v is not None and v >= self.threshold_percent for v in both)


def _config_meta(obj: DecreasingCircuits) -> dict[str, tuple[str, str, int]]:
    """``{config: (task, direction, length)}``: from the summary's columns (schema 2) or, for schema-1 names
    ``inc-3`` / ``dec-5``, from the name and the record's task."""
    out = {}
    for r in obj.summary:
        name = r["config"]
        if r.get("direction") is not None and r.get("length") is not None:
            out[name] = (r.get("task") or obj.task, r["direction"], int(r["length"]))
        else:
            head, _, length = name.rpartition("-")
            direction = {"inc": "increasing", "dec": "decreasing"}.get(head.split()[-1] if head else "", head)
            out[name] = (obj.task, direction, int(length))
    return out


def direction_pairs(obj: DecreasingCircuits) -> list[DirectionPair]:
    """Every (task, length) with both an increasing and a decreasing circuit, in summary order."""
    meta = _config_meta(obj)
    cross = obj.cross_task_percent  # {data: {circuit: percent}}
    pairs = []
    for inc, (task, direction, length) in meta.items():
        if direction != "increasing":
            continue
        dec = next((n for n, m in meta.items() if m == (task, "decreasing", length)), None)
        if dec is None:
            continue
        jaccard = next(r["jaccard"] for r in obj.head_overlap if {r["a"], r["b"]} == {inc, dec})
        pairs.append(
            DirectionPair(
                task,
                length,
                inc,
                dec,
                float(jaccard),
                cross.get(dec, {}).get(inc),
                cross.get(inc, {}).get(dec),
                100 * obj.threshold,
            )
        )
    return pairs


@dataclass(frozen=True)
class TaskPair:
    """A configuration of a second task (e.g. numbers) beside the main task's configuration of the same direction
    (the longest length shown): each circuit's score on the other's data (% of the full logit difference)."""

    direction: str
    other: str  # config names
    main: str
    other_on_main: float | None
    main_on_other: float | None


def task_pairs(obj: DecreasingCircuits) -> list[TaskPair]:
    """For each configuration of a task other than ``obj.task``: the main task's configuration of the same
    direction with the most members shown, and the transfer both ways (from ``cross_task_percent``)."""
    meta = _config_meta(obj)
    cross = obj.cross_task_percent
    out = []
    for name, (task, direction, _) in meta.items():
        if task == obj.task:
            continue
        mains = [(length, n) for n, (t, d, length) in meta.items() if t == obj.task and d == direction]
        if not mains:
            continue
        main = max(mains)[1]
        out.append(TaskPair(direction, name, main, cross.get(main, {}).get(name), cross.get(name, {}).get(main)))
    return out


def _pair_sentence(p: DirectionPair) -> str:
    def kept(v: float | None) -> str:
        return "–" if v is None else _pct(v)

    verdict = (
        "each circuit keeps at least the threshold on the other direction: the direction reuses one circuit"
        if p.reused
        else "below the threshold in at least one direction: the direction is carried in part by components of its own"
    )
    return (
        f"{p.task} with {p.length} members shown: head Jaccard {p.head_jaccard:.2f}; the increasing circuit keeps "
        f"{kept(p.increasing_on_decreasing)} on decreasing data and the decreasing one "
        f"{kept(p.decreasing_on_increasing)} on increasing data ({verdict})"
    )


def decreasing_verdict(obj: DecreasingCircuits) -> str:
    """04's verdict in Markdown: per (task, length) the head Jaccard of the increasing and decreasing circuits,
    the transfer both ways and whether both transfers reach the discovery threshold (``reused``), then the heads
    in every configuration's circuit. The chapter shows it; the Findings page starts with it."""
    pairs = direction_pairs(obj)
    others = task_pairs(obj)
    if not pairs and not others:
        return "No increasing/decreasing pair of configurations was run."
    shared = obj.shared_heads
    every = f"{_count(len(shared), 'head')} {'is' if len(shared) == 1 else 'are'} in every configuration's circuit"
    text = (
        "At the threshold "
        + _pct(100 * obj.threshold)
        + " of the full logit difference: "
        + ("; ".join(_pair_sentence(p) for p in pairs) if pairs else "no increasing/decreasing pair was run")
        + "."
    )
    for t in others:
        kept = [("–" if v is None else _pct(v)) for v in (t.other_on_main, t.main_on_other)]
        text += (
            f" Across tasks ({t.direction}): the {t.other} circuit keeps {kept[0]} on {t.main} data and the "
            f"{t.main} circuit {kept[1]} on {t.other} data."
        )
    return text + f" {every}" + (f" ({' '.join(shared)})." if shared else ".")


def sample_sizes_sentence(summary: Sequence[dict]) -> str:
    """The data under each circuit, as a sentence: per config (rows with ``config, prompts, sequences,
    heldout_prompts, heldout_sequences, heldout_split``, as :func:`~seqcirc_utils.discovery.pipeline.score_columns`
    writes them) the discovery prompts and distinct sequences and the held-out ones with their split."""

    def count(n: Any, noun: str) -> str:
        return f"? {noun}" if n is None or math.isnan(float(n)) else f"{int(n)} {noun}"

    parts = []
    for r in summary:
        text = f"{r['config']} {count(r.get('prompts'), 'prompts')} from {count(r.get('sequences'), 'sequences')}"
        if r.get("heldout_prompts") is not None:
            text += (
                f", held out {count(r.get('heldout_prompts'), 'prompts')} from "
                f"{count(r.get('heldout_sequences'), 'sequences')} ({r.get('heldout_split') or 'split not stated'})"
            )
        parts.append(text)
    return (
        (
            "Discovery and held-out data (a `disjoint` split shares no sequence between the two): "
            + "; ".join(parts)
            + "."
        )
        if parts
        else "No circuit was found."
    )


def skipped_sentence(skipped: dict[str, str]) -> str:
    """``{config: reason}`` of configurations not run, as one sentence."""
    return "Not run: " + "; ".join(f"{name} ({reason})" for name, reason in skipped.items()) + "."


def _step_names(obj: StepKCircuits) -> tuple[str, str] | None:
    """``(step-1 config, step-k config)`` from the summary rows' ``step`` column."""
    rows = obj.summary or []
    base = next((r["config"] for r in rows if r.get("step") == 1), None)
    step = next((r["config"] for r in rows if r.get("step") == obj.step_k), None)
    return (base, step) if base and step else None


def step_k_verdict(obj: StepKCircuits) -> str:
    """04's step-k verdict in Markdown: top-1 accuracy by step per family, then (when a step-k circuit was
    found) its size, overlap and transfer against the step-1 circuit and whether its heads' mean add-k OV score
    exceeds that of all heads (adding k is, or is not, done by heads that write the member k ahead)."""
    acc = {(r["family"], r["step"]): r["top1_accuracy"] for r in obj.behaviour if r.get("n")}
    text = (
        "Top-1 accuracy by step: "
        + "; ".join(
            f"{fam} "
            + (
                ", ".join(f"step {k} {_pct(100 * acc[(fam, k)])}" for k in obj.steps if (fam, k) in acc)
                or "no step fits"
            )
            for fam in obj.families
        )
        + "."
    )
    k = obj.step_k
    if obj.error is not None or obj.overlap is None:
        return text + f" No step-{k} circuit could be found ({obj.error})."
    heads = next(r for r in obj.overlap if r["kind"] == "heads")
    groups = {r["heads"]: r for r in obj.ov_groups or []}
    mine, everyone = groups[f"step-{k} circuit"], groups["all heads"]
    text += (
        f" The step-{k} {obj.task} circuit shares {_count(int(heads['intersection']), 'head')} with the step-1 "
        f"circuit (head Jaccard {heads['jaccard']:.2f})"
    )
    circuit = obj.circuit
    if circuit is not None:
        text += (
            f"; it has {_count(len(circuit.heads), 'head')} and {_count(len(circuit.mlps), 'MLP')} "
            f"({_pct(100 * circuit.score)} in-sample)"
        )
    names = _step_names(obj)
    cross = obj.cross_task_percent or {}
    if (
        names
        and cross.get(names[1], {}).get(names[0]) is not None
        and cross.get(names[0], {}).get(names[1]) is not None
    ):
        base, step = names
        text += (
            f". The step-1 circuit keeps {_pct(cross[step][base])} on step-{k} data and the step-{k} circuit "
            f"{_pct(cross[base][step])} on step-1 data"
        )
    above = mine[f"mean_add{k}"] > everyone[f"mean_add{k}"]
    text += (
        f". Its heads' mean add-{k} OV score is {mine[f'mean_add{k}']:.2f} against {everyone[f'mean_add{k}']:.2f} "
        "over all heads: "
        + (
            "its heads write the member k ahead more often than heads at large."
            if above
            else "its heads do not write the member k ahead more often than heads at large; adding "
            "k is not done by an add-k OV circuit in one head."
        )
    )
    return text


# --------------------------------------------------------------------------- 06: induction offsets


@dataclass(frozen=True)
class InductionVerdict:
    """One family's induction-offset verdict on the irregularly spaced prompts (see 06).

    ``same_type`` / ``positional``: heads with ``same_type_k1`` above ``contrast`` / below ``-contrast``, strongest
    first; ``top_head``: the largest ``member_k1``; ``far_head``: the largest member offset ``max_offset``."""

    family: str
    contrast: float
    n_heads: int
    top_head: str
    member_k1: float
    token_k1: float
    regular_member_k1: float | None
    same_type: tuple[str, ...]
    positional: tuple[str, ...]
    far_head: str | None
    far_member: float | None
    far_member_k1: float | None
    regular_spacing: tuple[int, ...]
    final_head: str | None
    final_to_last_member: float | None
    prev_head: str | None
    member_to_prev_member: float | None


def _rows(rows: Sequence[dict], family: str, prompts: str) -> list[dict]:
    return [r for r in rows if r["family"] == family and r["prompts"] == prompts]


def induction_verdicts(obj: InductionOffsets) -> list[InductionVerdict]:
    """One :class:`InductionVerdict` per family with spaced-prompt scores, in the record's family order."""
    out = []
    k = obj.max_offset
    for family in obj.families:
        spaced = _rows(obj.offsets, family, "spaced")
        if not spaced:
            continue
        regular = {r["component"]: r for r in _rows(obj.offsets, family, "regular")}
        top = max(spaced, key=lambda r: r["member_k1"])
        same = sorted((r for r in spaced if r["same_type_k1"] > obj.contrast), key=lambda r: -r["same_type_k1"])
        posn = sorted((r for r in spaced if r["same_type_k1"] < -obj.contrast), key=lambda r: r["same_type_k1"])
        far = max(spaced, key=lambda r: r.get(f"member_k{k}", float("-inf"))) if k > 1 else None
        final = [r for r in obj.attention if r["family"] == family and r["prompts"] == obj.attention_template]
        prev = [r for r in obj.attention if r["family"] == family and r["prompts"] == "spaced"]
        final_top = max(final, key=lambda r: r["final_to_last_member"]) if final else None
        prev_top = max(prev, key=lambda r: r["member_to_prev_member"]) if prev else None
        out.append(
            InductionVerdict(
                family=family,
                contrast=obj.contrast,
                n_heads=len(spaced),
                top_head=top["component"],
                member_k1=float(top["member_k1"]),
                token_k1=float(top["token_k1"]),
                regular_member_k1=float(regular[top["component"]]["member_k1"])
                if top["component"] in regular
                else None,
                same_type=tuple(r["component"] for r in same),
                positional=tuple(r["component"] for r in posn),
                far_head=far["component"] if far else None,
                far_member=float(far[f"member_k{k}"]) if far else None,
                far_member_k1=float(far["member_k1"]) if far else None,
                regular_spacing=tuple(obj.regular_spacing.get(family, [])),
                final_head=final_top["component"] if final_top else None,
                final_to_last_member=float(final_top["final_to_last_member"]) if final_top else None,
                prev_head=prev_top["component"] if prev_top else None,
                member_to_prev_member=float(prev_top["member_to_prev_member"]) if prev_top else None,
            )
        )
    return out


def shared_same_type_heads(obj: InductionOffsets) -> list[str]:
    """The heads among every family's top ``obj.top_n`` by ``same_type_k1`` on spaced prompts, in layer order."""
    tops = []
    for family in obj.families:
        spaced = sorted(_rows(obj.offsets, family, "spaced"), key=lambda r: -r["same_type_k1"])
        tops.append({r["component"] for r in spaced[: obj.top_n]})
    return sorted(set.intersection(*tops), key=parse_component) if tops else []


def induction_verdict_markdown(obj: InductionOffsets) -> str:
    """06's closing Markdown: per family the regular prompts' spacing, the top previous-member head, the
    same-type and positional heads (``|same_type_k1| > contrast``), the strongest far-offset head and the
    attention-summary heads; then the same-type heads the families share."""
    lines = []
    for v in induction_verdicts(obj):
        if v.regular_spacing:
            lines.append(
                f"- **{v.family}**: in the regular ({obj.template}) prompts consecutive members are "
                f"{' or '.join(map(str, v.regular_spacing))} token(s) apart, so member offset 1 and token "
                "offset 1 "
                + (
                    "read the same position there (the first member aside)."
                    if list(v.regular_spacing) == [1]
                    else "already read different positions there."
                )
            )
        else:
            lines.append(f"- **{v.family}**:")
        regular = f"; on regular prompts member_k1 {v.regular_member_k1:.2f}" if v.regular_member_k1 is not None else ""
        lines.append(
            f"  On irregularly spaced prompts the strongest previous-member head is **{v.top_head}** "
            f"(member_k1 {v.member_k1:.2f} vs token_k1 {v.token_k1:.2f}{regular}). "
            f"{_count(len(v.same_type), 'head')} of {v.n_heads} are same-type (same_type_k1 > {v.contrast}): "
            f"{', '.join(v.same_type[:6]) or 'none'}; {len(v.positional)} are positional "
            f"(< -{v.contrast}): {', '.join(v.positional[:6]) or 'none'}."
        )
        if v.far_head is not None:
            k = obj.max_offset
            lines.append(
                f"  The strongest head at member offset {k} is **{v.far_head}** "
                f"(member_k{k} {v.far_member:.2f}, member_k1 {v.far_member_k1:.2f})."
            )
        if v.final_head is not None and v.prev_head is not None:
            lines.append(
                f"  From the final position of the {obj.attention_template} prompts, **{v.final_head}** "
                f"attends most to the last member ({v.final_to_last_member:.2f}); from member to previous "
                f"member, **{v.prev_head}** ({v.member_to_prev_member:.2f}), "
                + ("one of the same-type heads." if v.prev_head in v.same_type else "not among the same-type heads.")
            )
    if len(obj.families) > 1:
        common = shared_same_type_heads(obj)
        lines.append(
            f"- Of the top {obj.top_n} same-type heads of each family, {len(common)} are shared by "
            f"{', '.join(obj.families)}: {', '.join(common) or 'none'}."
        )
    return "\n".join(lines) if lines else "No spaced prompts were scored."


def induction_headline(obj: InductionOffsets) -> str:
    """06's Findings paragraph: per family the top previous-member head and the same-type / positional counts
    (the rule of :func:`induction_verdicts`)."""
    parts = [
        f"for {v.family} {v.top_head} (attention to the previous member {v.member_k1:.2f}, to the previous "
        f"token {v.token_k1:.2f}; {len(v.same_type)} of {v.n_heads} heads are same-type and "
        f"{len(v.positional)} positional, |member_k1 - token_k1| > {v.contrast})"
        for v in induction_verdicts(obj)
    ]
    if not parts:
        return "No spaced prompts were scored."
    return (
        "On irregularly spaced prompts, which separate members from positions, the strongest previous-member "
        "head is " + "; ".join(parts) + "."
    )


def member_spacing(member_positions: Sequence[int]) -> list[int]:
    """The distinct token distances between consecutive members (``[1]`` for adjacent members)."""
    return sorted({b - a for a, b in pairwise(member_positions)})


# --------------------------------------------------------------------------- 12: representations


def null_brief(null) -> dict[str, Any]:
    """The headline numbers of a ``null_distribution`` record: ``observed, depth, n, null_p95, percentile, p``."""
    return {
        "observed": float(null.observed),
        "depth": null.matched.get("depth"),
        "n": int(null.n_draws),
        "null_p95": float(null.null_p95),
        "percentile": float(null.observed_percentile),
        "p": float(null.p_value),
    }


def representation_headline(
    value_summary,
    order_sep,
    *,
    center: str,
    comparisons: Sequence[str],
    families: Sequence[str],
    value_layer: int,
    step_layer: int,
    nulls: dict[str, Any],
    random_nulls: dict[str, Any],
    successor: dict[str, Any],
    alpha: float = 0.05,
) -> dict[str, Any]:
    """12's headline numbers (the ``headline`` of :class:`~seqcirc_utils.core.result_records.Representations`,
    which the Findings page reads). Everything is measured on the evaluation prompts:

    - ``value_summary``: rows ``center, comparison, layer, cosine`` (``comparisons`` = same value / different value
      same format / different value different format, in that order); read at ``value_layer`` (chosen on the
      selection prompts);
    - ``order_sep``: rows ``layer, family, accuracy, perm_q95, chance`` (ordered vs shuffled); ``order_first_layer``
      is the first depth from which every family is above its per-depth permutation 95th percentile (None if none);
    - ``nulls`` / ``random_nulls`` (trained / random-weight model): ``null_distribution`` records keyed
      ``value_gap_max``, ``value_gap_selected``, ``step_cosine_max``, ``step_cosine_selected``, ``order_max/<family>``
      (the ``*_selected`` ones only for the trained model);
    - ``successor``: :func:`~seqcirc_utils.mechanisms.representations.successor_summary` at ``step_layer``.

    ``direction_name`` is "next direction" when the successor test passes, else "value-step direction".
    A statistic is ``significant`` when its p-value is at most ``alpha``.
    """
    same, diff_same, diff_diff = comparisons[:3]
    vs = value_summary[value_summary["center"] == center].pivot(index="layer", columns="comparison", values="cosine")
    gap = vs[same] - vs[diff_diff]
    order_wide = order_sep.pivot(index="layer", columns="family", values="accuracy")
    order_q95 = order_sep.pivot(index="layer", columns="family", values="perm_q95")
    separated = (order_wide > order_q95).all(axis=1)
    briefs = {k: null_brief(v) for k, v in nulls.items()}
    random_briefs = {k: null_brief(v) for k, v in random_nulls.items()}
    for b in (*briefs.values(), *random_briefs.values()):
        b["significant"] = b["p"] <= alpha
    return {
        "center": center,
        "n_depths": len(vs),
        "alpha": alpha,
        "value_layer": int(value_layer),
        "same_value_cosine": float(vs.loc[value_layer, same]),
        "diff_value_same_format_cosine": float(vs.loc[value_layer, diff_same]),
        "diff_value_diff_format_cosine": float(vs.loc[value_layer, diff_diff]),
        "same_value_above_control_layers": int((gap > 0).sum()),
        "value_gap": briefs["value_gap_selected"],
        "value_gap_max": briefs["value_gap_max"],
        "random_value_gap_max": random_briefs["value_gap_max"],
        "step_layer": int(step_layer),
        "step_cosine": briefs["step_cosine_selected"],
        "step_cosine_max": briefs["step_cosine_max"],
        "random_step_cosine_max": random_briefs["step_cosine_max"],
        "successor": successor,
        "direction_name": "next direction" if successor.get("passes") else "value-step direction",
        "order_first_layer": int(separated.idxmax()) if separated.any() else None,
        "order_accuracy_last": {f: float(order_wide[f].iloc[-1]) for f in families},
        "order_chance": float(order_sep["chance"].iloc[0]),
        "order_max": {f: briefs[f"order_max/{f}"] for f in families},
        "random_order_max": {f: random_briefs[f"order_max/{f}"] for f in families},
    }


def prefix_verdict(
    rows: pd.DataFrame, acc: pd.DataFrame, ld: pd.DataFrame, prefix: str, tokens: Mapping[str, str | None]
) -> str:
    """01: how much the prompt prefix matters, in Markdown bullets.

    ``rows``: one row per built (task, template, direction, prefix) combination (``top1_accuracy``,
    ``logit_diff``, ``n``, optionally ``prob_diff``); ``acc`` / ``ld``: per (task, direction) means over templates,
    one column per prefix (:func:`~seqcirc_utils.tasks.behaviour.prefix_summary`); ``prefix``: the prefix the
    book uses; ``tokens``: each prefix's token (None: no token)."""
    cols = [p for p in tokens if p in acc.columns]
    per_prefix = (
        rows.groupby("prefix")
        .agg(top1_accuracy=("top1_accuracy", "mean"), logit_diff=("logit_diff", "mean"), n_combinations=("n", "size"))
        .reindex(cols)
    )
    lines = ["Means over every (task, template, direction) combination built with each prefix:"]
    for p, row in per_prefix.iterrows():
        tok = tokens[p]
        lines.append(
            f"- **{p}** ({'`' + tok + '`' if tok else 'no token'}): top-1 accuracy {row.top1_accuracy:.0%}, "
            f"logit difference {row.logit_diff:.2f} nats ({int(row.n_combinations)} combinations)."
        )
    if prefix in cols and len(cols) > 1:
        for other in [c for c in cols if c != prefix]:
            d_acc = acc[prefix] - acc[other]
            d_ld = ld[prefix] - ld[other]
            i = d_acc.abs().idxmax()
            lines.append(
                f"- {prefix} vs {other}: mean accuracy {per_prefix.top1_accuracy[prefix]:.0%} vs "
                f"{per_prefix.top1_accuracy[other]:.0%}; per task and direction the difference ranges from "
                f"{100 * d_acc.min():+.0f} to {100 * d_acc.max():+.0f} points (largest for {acc.task[i]} / "
                f"{acc.direction[i]}: {acc[prefix][i]:.0%} vs {acc[other][i]:.0%}), the logit difference from "
                f"{d_ld.min():+.2f} to {d_ld.max():+.2f} nats."
            )
        spread = acc[cols].max(axis=1) - acc[cols].min(axis=1)
        big = acc[spread >= 0.1]
        lines.append(
            f"- {len(big)} of {len(acc)} task/direction rows change top-1 accuracy by 10 points or more between "
            "prefixes"
            + (": " + ", ".join(f"{r.task} / {r.direction}" for r in big.itertuples()) + "." if len(big) else ".")
        )
    sequences = rows[rows["task"] != GREATER_THAN]
    by_template = sequences.groupby(["template", "prefix"])["top1_accuracy"].mean().unstack()
    if len(by_template) and all(c in by_template.columns for c in cols):
        lines.append(
            f"- By template (mean top-1 accuracy, {' / '.join(cols)}): "
            + "; ".join(f"{t} {' / '.join(f'{v:.0%}' for v in row[cols])}" for t, row in by_template.iterrows())
            + "."
        )
    gt_rows = rows[rows["task"] == GREATER_THAN]
    if len(gt_rows) and "prob_diff" in gt_rows:
        lines.append(
            "- Greater-than probability difference: "
            + ", ".join(f"{r.prefix} {r.prob_diff:.1%}" for r in gt_rows.itertuples())
            + "."
        )
    return "\n".join(lines)


__all__: list[Any] = [
    "BehaviourSummary",
    "DirectionPair",
    "InductionVerdict",
    "Note",
    "TaskPair",
    "behaviour_summary",
    "behaviour_verdict",
    "chance_phrase",
    "control_verdict",
    "decreasing_verdict",
    "direction_pairs",
    "induction_headline",
    "induction_verdict_markdown",
    "induction_verdicts",
    "member_spacing",
    "null_brief",
    "prefix_verdict",
    "representation_headline",
    "sample_sizes_sentence",
    "shared_same_type_heads",
    "skipped_sentence",
    "smoke_note",
    "step_k_verdict",
    "task_pairs",
]
