"""Findings readers of the sharing-by-threshold, step-k, head -> MLP and lens-by-length results (issue 10)."""

from record_fixtures import example, greater_than_overlap_digits, row

from seqcirc_utils.core.result_records import (
    DecreasingCircuits,
    GreaterThanThresholds,
    MlpAblation,
    SharedByThreshold,
    SharedCircuits,
    StepKCircuits,
    SuccessorHeads,
)
from seqcirc_utils.report.findings import (
    UNREADABLE,
    decreasing_circuits,
    greater_than_overlap,
    mlp_ablation,
    shared_circuits,
    successor_heads,
)


def _files(*records) -> dict:
    """``{file name: record}`` as the Findings page hands them to a reader."""
    return {type(r).file: r for r in records}


def test_readers_summarise_the_new_result_keys():
    shared = example(
        SharedCircuits,
        threshold=0.8,
        method="sweep",
        template="among_words",
        shared=["MLP0"],
        summary=[
            row(
                SharedCircuits,
                "summary",
                task="digits",
                threshold=0.8,
                heads=3,
                mlps=2,
                score=81.0,
                **{"heldout_%": 74.6},
            )
        ],
    )
    by_thr = example(
        SharedByThreshold,
        thresholds=[0.9, 0.8],
        shared={"0.9": ["MLP0", "L1.H1"], "0.8": ["MLP0"]},
        scores=[
            row(SharedByThreshold, "scores", threshold=0.9, data="digits held-out", beats_random=True),
            row(SharedByThreshold, "scores", threshold=0.9, data="digits in-sample", beats_random=False),
            row(SharedByThreshold, "scores", threshold=0.8, data="digits held-out", beats_random=False),
        ],
    )
    text = shared_circuits(_files(shared, by_thr))
    assert "at 90 % 2 components, above every random circuit of that size on held-out prompts for 1 of 1" in text
    assert "at 80 % 1 component," in text and "for 0 of 1" in text
    assert "digits 3 heads + 2 MLPs (81 %; held out 75 %); 1 component is shared by all 1" in text
    # schema 2: the null at one threshold (p, n_draws); the other threshold's rows carry no verdict
    nulled = example(
        SharedByThreshold,
        thresholds=[0.9, 0.8],
        shared={"0.9": ["MLP0", "L1.H1"], "0.8": ["MLP0"]},
        scores=[
            row(SharedByThreshold, "scores", threshold=0.9, data="digits held-out", beats_random=None),
            row(
                SharedByThreshold,
                "scores",
                threshold=0.8,
                data="digits held-out",
                beats_random=False,
                p=0.31,
                n_draws=99,
            ),
        ],
    )
    text = shared_circuits(_files(shared, nulled))
    assert "at 80 % 1 component, above its null (99 random circuits matched per layer, p <= 0.05)" in text
    assert "for 0 of 1 tasks (digits held-out p = 0.310)" in text and "at 90 % 2 components;" in text

    gt = greater_than_overlap_digits()
    ladder = example(
        GreaterThanThresholds, thresholds=[0.97, 0.5], method="fast", lost_at={"digits": 0.5, "months": None}
    )
    text = greater_than_overlap(_files(gt, ladder))
    assert "digits from 50 %" in text and "months never (down to 50 %)" in text

    dec = example(DecreasingCircuits, task="digits", summary=[row(DecreasingCircuits, "summary", config="inc-3")])
    step = example(
        StepKCircuits,
        task="digits",
        step_k=2,
        error=None,
        steps=[1, 2],
        families=["digits"],
        behaviour=[
            row(StepKCircuits, "behaviour", family="digits", step=1, n=8, top1_accuracy=1.0),
            row(StepKCircuits, "behaviour", family="digits", step=2, n=8, top1_accuracy=0.5),
        ],
        overlap=[
            row(StepKCircuits, "overlap", kind="all", intersection=5, jaccard=0.5),
            row(StepKCircuits, "overlap", kind="heads", intersection=2, jaccard=0.25),
        ],
        ov_groups=[
            row(StepKCircuits, "ov_groups", heads="step-2 circuit", mean_add2=0.3),
            row(StepKCircuits, "ov_groups", heads="all heads", mean_add2=0.1),
        ],
    )
    text = decreasing_circuits(_files(dec, step))
    assert "step 2 50 %" in text and "shares 2 heads" in text and "0.30 against 0.10" in text
    # without a step-k circuit (error set, circuit keys null) only the behaviour is told
    failed = decreasing_circuits(
        _files(
            dec,
            example(
                StepKCircuits,
                task="digits",
                error="too few prompts",
                steps=[2],
                families=["digits"],
                behaviour=step.behaviour,
            ),
        )
    )
    assert "step 2 50 %" in failed and "shares" not in failed

    mlps = example(
        MlpAblation,
        key_mlp="MLP0",
        mlp_effects=[row(MlpAblation, "mlp_effects", task="digits", component="MLP0", **{"kept_%": 10.0})],
        head_to_mlp=[
            row(MlpAblation, "head_to_mlp", task="digits", receiver="MLP9", sender="L3.H1", effect=-0.05),
            row(MlpAblation, "head_to_mlp", task="digits", receiver="MLP9", sender="L4.H2", effect=-0.2),
        ],
    )
    assert "MLP9 <- L4.H2 for digits (-20.0 points)" in mlp_ablation(_files(mlps))

    succ = example(
        SuccessorHeads,
        logit_lens_by_length=[
            row(SuccessorHeads, "logit_lens_by_length", direction="decreasing", length=3, median_first_top1=20.0),
            row(SuccessorHeads, "logit_lens_by_length", direction="decreasing", length=5, median_first_top1=None),
        ],
    )
    text = successor_heads(_files(succ))
    assert "layer 20 (decreasing, 3 members)" in text and "5 members" not in text and UNREADABLE not in text
