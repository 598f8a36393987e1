"""Chapter verdicts (report/verdicts.py): computed from typed records built with the fixtures, the same text in
the chapter and on the Findings page."""

from record_fixtures import circuit, example, row

from seqcirc_utils.core.result_records import (
    DecreasingCircuits,
    InductionOffsets,
    StepKCircuits,
)
from seqcirc_utils.report.findings import decreasing_circuits, induction_offsets
from seqcirc_utils.report.verdicts import (
    decreasing_verdict,
    direction_pairs,
    induction_headline,
    induction_verdict_markdown,
    induction_verdicts,
    member_spacing,
    shared_same_type_heads,
    smoke_note,
    step_k_verdict,
    task_pairs,
)


def _config(task, direction, length):
    return row(
        DecreasingCircuits,
        "summary",
        config=f"{task} {direction[:3]}-{length}",
        task=task,
        direction=direction,
        length=length,
    )


def _decreasing(cross):
    """Digits at length 3 and numbers at length 4, increasing and decreasing; ``cross`` {data: {circuit: %}}."""
    configs = [_config("digits", d, 3) for d in ("increasing", "decreasing")] + [
        _config("numbers", d, 4) for d in ("increasing", "decreasing")
    ]
    overlap = [
        row(DecreasingCircuits, "head_overlap", a="digits inc-3", b="digits dec-3", jaccard=0.5),
        row(DecreasingCircuits, "head_overlap", a="numbers dec-4", b="numbers inc-4", jaccard=0.25),
        row(DecreasingCircuits, "head_overlap", a="digits inc-3", b="numbers inc-4", jaccard=0.9),
    ]
    return example(
        DecreasingCircuits,
        task="digits",
        threshold=0.8,
        summary=configs,
        head_overlap=overlap,
        cross_task_percent=cross,
        shared_heads=["L1.H2"],
    )


def test_direction_pairs_match_task_and_length_and_read_the_transfer_both_ways():
    cross = {
        "digits dec-3": {"digits inc-3": 85.0},
        "digits inc-3": {"digits dec-3": 90.0},
        "numbers dec-4": {"numbers inc-4": 40.0},
        "numbers inc-4": {"numbers dec-4": 95.0},
    }
    pairs = direction_pairs(_decreasing(cross))
    assert [(p.task, p.length, p.increasing, p.decreasing) for p in pairs] == [
        ("digits", 3, "digits inc-3", "digits dec-3"),
        ("numbers", 4, "numbers inc-4", "numbers dec-4"),
    ]
    digits, numbers = pairs
    assert (digits.head_jaccard, digits.increasing_on_decreasing, digits.decreasing_on_increasing) == (0.5, 85.0, 90.0)
    assert (numbers.head_jaccard, numbers.increasing_on_decreasing, numbers.decreasing_on_increasing) == (
        0.25,
        40.0,
        95.0,
    )
    assert digits.reused and not numbers.reused  # 40 % < the 80 % threshold


def test_decreasing_verdict_is_the_findings_paragraph():
    cross = {
        "digits dec-3": {"digits inc-3": 85.0},
        "digits inc-3": {"digits dec-3": 79.0},
        "numbers dec-4": {"numbers inc-4": 81.0},
        "numbers inc-4": {"numbers dec-4": 80.0},
    }
    record = _decreasing(cross)
    text = decreasing_verdict(record)
    assert (
        "digits with 3 members shown: head Jaccard 0.50; the increasing circuit keeps 85 % on decreasing data "
        "and the decreasing one 79 % on increasing data (below the threshold" in text
    )
    assert "numbers with 4 members shown: head Jaccard 0.25" in text and "reuses one circuit" in text
    assert "1 head is in every configuration's circuit (L1.H2)." in text
    assert decreasing_circuits({DecreasingCircuits.file: record}) == text


def test_a_second_task_is_compared_with_the_main_tasks_longest_configuration_of_its_direction():
    configs = [
        _config("digits", "decreasing", 3),
        _config("digits", "decreasing", 5),
        _config("numbers", "decreasing", 4),
    ]
    cross = {"digits dec-5": {"numbers dec-4": 30.0}, "numbers dec-4": {"digits dec-5": 55.0}}
    record = example(DecreasingCircuits, task="digits", threshold=0.8, summary=configs, cross_task_percent=cross)
    (pair,) = task_pairs(record)
    assert (pair.other, pair.main, pair.other_on_main, pair.main_on_other) == (
        "numbers dec-4",
        "digits dec-5",
        30.0,
        55.0,
    )
    text = decreasing_verdict(record)
    assert "no increasing/decreasing pair was run." in text
    assert (
        "the numbers dec-4 circuit keeps 30 % on digits dec-5 data and the digits dec-5 circuit 55 % on "
        "numbers dec-4 data" in text
    )


def test_schema_1_config_names_still_pair():
    record = example(
        DecreasingCircuits,
        task="digits",
        threshold=0.8,
        summary=[
            row(DecreasingCircuits, "summary", config="inc-5"),
            row(DecreasingCircuits, "summary", config="dec-5"),
        ],
        head_overlap=[row(DecreasingCircuits, "head_overlap", a="inc-5", b="dec-5", jaccard=0.1)],
        cross_task_percent={"dec-5": {"inc-5": 20.0}, "inc-5": {"dec-5": 30.0}},
    )
    (pair,) = direction_pairs(record)
    assert (pair.task, pair.length, pair.increasing_on_decreasing, pair.decreasing_on_increasing) == (
        "digits",
        5,
        20.0,
        30.0,
    )


def _step(mean_step, mean_all):
    return example(
        StepKCircuits,
        task="digits",
        step_k=2,
        steps=[1, 2],
        families=["digits", "months"],
        error=None,
        behaviour=[
            row(StepKCircuits, "behaviour", family="digits", step=1, n=8, top1_accuracy=1.0),
            row(StepKCircuits, "behaviour", family="digits", step=2, n=8, top1_accuracy=0.5),
            row(StepKCircuits, "behaviour", family="months", step=2, n=0, top1_accuracy=None),
        ],
        summary=[{"config": "digits inc-3", "step": 1}, {"config": "digits step2-3", "step": 2}],
        cross_task_percent={"digits step2-3": {"digits inc-3": 60.0}, "digits inc-3": {"digits step2-3": 70.0}},
        overlap=[row(StepKCircuits, "overlap", kind="heads", intersection=2, jaccard=0.25)],
        ov_groups=[
            row(StepKCircuits, "ov_groups", heads="step-2 circuit", mean_add2=mean_step),
            row(StepKCircuits, "ov_groups", heads="all heads", mean_add2=mean_all),
        ],
        circuit=circuit(heads=[[0, 1], [2, 3]], mlps=[0], score=0.82),
    )


def test_step_k_verdict_compares_the_add_k_score_with_all_heads():
    text = step_k_verdict(_step(0.3, 0.1))
    assert text.startswith("Top-1 accuracy by step: digits step 1 100 %, step 2 50 %; months no step fits.")
    assert "it has 2 heads and 1 MLP (82 % in-sample)" in text
    assert "The step-1 circuit keeps 60 % on step-2 data and the step-2 circuit 70 % on step-1 data" in text
    assert "0.30 against 0.10" in text and "write the member k ahead more often" in text
    assert "do not write" in step_k_verdict(_step(0.1, 0.3))
    failed = example(
        StepKCircuits,
        task="digits",
        step_k=2,
        steps=[2],
        families=["digits"],
        error="too few prompts",
        behaviour=[row(StepKCircuits, "behaviour", family="digits", step=2, n=8, top1_accuracy=0.5)],
    )
    assert step_k_verdict(failed).endswith("No step-2 circuit could be found (too few prompts).")


def _offset(family, prompts, component, member_k1, token_k1, member_k2=0.0):
    return row(
        InductionOffsets,
        "offsets",
        family=family,
        prompts=prompts,
        component=component,
        member_k1=member_k1,
        token_k1=token_k1,
        same_type_k1=member_k1 - token_k1,
        member_k2=member_k2,
    )


def _induction(contrast=0.2):
    offsets = [
        _offset("digits", "spaced", "L0.H0", 0.9, 0.1, 0.05),  # same-type, +0.8
        _offset("digits", "spaced", "L1.H0", 0.3, 0.2, 0.6),  # +0.1: neither at contrast 0.2
        _offset("digits", "spaced", "L2.H0", 0.1, 0.7),  # positional, -0.6
        _offset("digits", "regular", "L0.H0", 0.8, 0.8),
        _offset("months", "spaced", "L1.H0", 0.5, 0.0),
        _offset("months", "spaced", "L0.H0", 0.45, 0.0),
    ]
    attention = [
        {
            "family": "digits",
            "prompts": "comma",
            "component": "L2.H0",
            "final_to_last_member": 0.7,
            "member_to_prev_member": 0.0,
        },
        {
            "family": "digits",
            "prompts": "spaced",
            "component": "L0.H0",
            "final_to_last_member": 0.0,
            "member_to_prev_member": 0.6,
        },
    ]
    return example(
        InductionOffsets,
        families=["digits", "months"],
        template="pure",
        attention_template="comma",
        max_offset=2,
        offsets=offsets,
        attention=attention,
        contrast=contrast,
        top_n=1,
        regular_spacing={"digits": [1]},
    )


def test_induction_verdicts_count_heads_with_the_chapters_contrast():
    digits, months = induction_verdicts(_induction())
    assert (digits.top_head, digits.member_k1, digits.token_k1, digits.regular_member_k1) == ("L0.H0", 0.9, 0.1, 0.8)
    assert digits.same_type == ("L0.H0",) and digits.positional == ("L2.H0",) and digits.n_heads == 3
    assert (digits.far_head, digits.far_member) == ("L1.H0", 0.6)
    assert (digits.final_head, digits.prev_head) == ("L2.H0", "L0.H0")
    assert months.same_type == ("L1.H0", "L0.H0") and months.regular_member_k1 is None
    # a lower contrast counts L1.H0 (+0.1) as same-type too: the rule is the record's, not the reader's
    loose, _ = induction_verdicts(_induction(contrast=0.05))
    assert loose.same_type == ("L0.H0", "L1.H0")
    assert shared_same_type_heads(_induction()) == []  # top-1: digits L0.H0, months L1.H0


def test_induction_texts_agree_between_chapter_and_findings():
    record = _induction()
    chapter = induction_verdict_markdown(record)
    assert "consecutive members are 1 token(s) apart" in chapter
    assert (
        "**L0.H0** (member_k1 0.90 vs token_k1 0.10; on regular prompts member_k1 0.80). 1 head of 3 are "
        "same-type (same_type_k1 > 0.2): L0.H0; 1 are positional (< -0.2): L2.H0." in chapter
    )
    assert "**L0.H0** (0.60), one of the same-type heads." in chapter
    assert "Of the top 1 same-type heads of each family, 0 are shared" in chapter
    headline = induction_headline(record)
    assert (
        "for digits L0.H0 (attention to the previous member 0.90, to the previous token 0.10; 1 of 3 heads are "
        "same-type and 1 positional"
        in headline
        and "for months L1.H0" in headline
    )
    assert induction_offsets({InductionOffsets.file: record}) == headline


def test_member_spacing_and_smoke_note():
    assert member_spacing([1, 3, 5, 8]) == [2, 3] and member_spacing([4, 5, 6]) == [1]
    note = smoke_note("16 prompts")
    assert "Smoke mode" in note._repr_markdown_() and "16 prompts" in str(note)


def test_representation_headline_from_the_chapters_tables():
    import pandas as pd

    from seqcirc_utils.report.verdicts import representation_headline

    comparisons = ("same value", "different value, same format", "different value and format")
    cos = {0: (0.5, 0.4, 0.45), 1: (0.9, 0.2, 0.1), 2: (0.6, 0.5, 0.7)}  # gaps 0.05, 0.8, -0.1
    value_summary = pd.DataFrame(
        [
            {"center": c, "comparison": comp, "layer": layer, "cosine": v + (c == "none")}
            for c in ("format", "none")
            for layer, vals in cos.items()
            for comp, v in zip(comparisons, vals)
        ]
    )
    order_sep = pd.DataFrame(
        [
            {"layer": layer, "family": f, "accuracy": acc, "perm_q95": 0.6, "chance": 0.5}
            for layer, accs in {0: (0.5, 0.9), 1: (0.7, 0.8), 2: (0.65, 0.9)}.items()
            for f, acc in zip(("digits", "months"), accs)
        ]
    )
    from types import SimpleNamespace

    def null(observed, p, depth=None):
        return SimpleNamespace(
            observed=observed, matched={"depth": depth}, n_draws=99, null_p95=0.5, observed_percentile=90.0, p_value=p
        )

    nulls = {
        "value_gap_selected": null(0.8, 0.01, 1),
        "value_gap_max": null(0.8, 0.02),
        "step_cosine_selected": null(0.6, 0.2, 2),
        "step_cosine_max": null(0.8, 0.03),
    } | {f"order_max/{f}": null(0.9, 0.01) for f in ("digits", "months")}
    random_nulls = {k: null(0.1, 0.5) for k in ("value_gap_max", "step_cosine_max")} | {
        f"order_max/{f}": null(0.6, 0.3) for f in ("digits", "months")
    }
    kwargs = dict(
        center="format",
        comparisons=comparisons,
        families=["digits", "months"],
        value_layer=1,
        step_layer=2,
        nulls=nulls,
        random_nulls=random_nulls,
        successor={"passes": False},
    )
    h = representation_headline(value_summary, order_sep, **kwargs)
    assert (
        h["value_layer"],
        h["same_value_cosine"],
        h["diff_value_same_format_cosine"],
        h["diff_value_diff_format_cosine"],
    ) == (1, 0.9, 0.2, 0.1)
    assert h["same_value_above_control_layers"] == 2 and h["n_depths"] == 3
    assert h["value_gap"]["significant"] and not h["step_cosine"]["significant"] and h["step_cosine"]["depth"] == 2
    assert not h["random_value_gap_max"]["significant"] and h["direction_name"] == "value-step direction"
    assert h["order_first_layer"] == 1 and h["order_accuracy_last"] == {"digits": 0.65, "months": 0.9}
    assert h["order_chance"] == 0.5
    never = representation_headline(value_summary, order_sep.assign(perm_q95=0.95), **kwargs)
    assert never["order_first_layer"] is None
    assert (
        representation_headline(value_summary, order_sep, **(kwargs | {"successor": {"passes": True}}))[
            "direction_name"
        ]
        == "next direction"
    )


def test_behaviour_verdict_and_findings_use_one_summary():
    from seqcirc_utils.core.result_records import Behaviour
    from seqcirc_utils.report.findings import behaviour
    from seqcirc_utils.report.verdicts import behaviour_summary, behaviour_verdict

    def r(task, template, direction, n, acc, pd_=None):
        return row(
            Behaviour,
            "rows",
            task=task,
            template=template,
            direction=direction,
            n=n,
            top1_accuracy=acc,
            p_correct=None if acc is None else acc / 2,
            logit_diff=1.0,
            prob_diff=pd_,
        )

    rows = [
        r("digits", "pure", "increasing", 8, 1.0),
        r("months", "comma", "increasing", 8, 0.5),
        r("digits", "pure", "decreasing", 8, 0.25),
        r("greater_than", "pure", "increasing", 8, 0.0, 0.6),
        r("months", "pure", "decreasing", 0, None),
    ]
    b = behaviour_summary(rows)
    assert (b.increasing_accuracy, b.decreasing_accuracy, b.decreasing_harder) == (0.75, 0.25, True)
    assert (b.best["task"], b.hardest["task"], b.greater_than_pd, b.n_unbuilt) == ("digits", "months", 0.6, 1)
    text = behaviour_verdict(rows)
    assert "increasing 75 % vs decreasing 25 %: decreasing sequences are harder" in text
    assert "**months / comma**, top-1 accuracy 50 %" in text and "60.0 %" in text and "1 combinations" in text
    page = behaviour({Behaviour.file: example(Behaviour, rows=rows)})
    assert "mean top-1 accuracy is 75 % against 25 % on 1 decreasing ones" in page and "60.0 %" in page
    assert not behaviour_summary([r("digits", "pure", "decreasing", 8, 0.9)]).decreasing_harder


def test_prefix_verdict_reads_the_numbers():
    import pandas as pd

    from seqcirc_utils.report.verdicts import prefix_verdict

    rows = pd.DataFrame(
        [
            {"task": "digits", "template": "pure", "direction": "increasing", "prefix": p, "n": 8, "top1_accuracy": a}
            | {"logit_diff": l}
            for p, a, l in (("document", 0.9, 3.0), ("none", 0.5, 1.0))
        ]
    )
    acc = pd.DataFrame([{"task": "digits", "direction": "increasing", "document": 0.9, "none": 0.5}])
    ld = pd.DataFrame([{"task": "digits", "direction": "increasing", "document": 3.0, "none": 1.0}])
    text = prefix_verdict(rows, acc, ld, "document", {"document": "<|endoftext|>", "none": None})
    assert "**document** (`<|endoftext|>`): top-1 accuracy 90 %" in text.replace("90%", "90 %")
    assert "**none** (no token)" in text
    assert "from +40 to +40 points" in text and "+2.00 to +2.00 nats" in text
    assert "1 of 1 task/direction rows change top-1 accuracy by 10 points or more" in text
    assert "pure 90% / 50%" in text
