"""The published-results page: each anchor's reader finds this run's number in the notebooks' result files."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
from record_fixtures import circuit, example, row

from seqcirc_utils.core.result_records import Behaviour, CircuitFile, MlpAblation, SharedCircuits, SuccessorHeads
from seqcirc_utils.core.results import write_json_atomic
from seqcirc_utils.report.published import ANCHORS, comparison_table

NOT_IN_RUN = "not in this run"


def _ours(table: pd.DataFrame, quantity: str) -> str:
    return table.set_index("quantity").loc[quantity, "this run"]


def test_empty_results_read_as_not_in_this_run(tmp_path):
    table = comparison_table(tmp_path)
    assert len(table) == len(ANCHORS)
    assert set(table["this run"]) == {NOT_IN_RUN}


def test_readers_format_the_numbers_the_notebooks_wrote(tmp_path):
    # Files as notebooks 02, 05 and 07 write them: records of their types.
    write_json_atomic(
        tmp_path / "circuit_digits.json",
        CircuitFile(
            circuits=[
                circuit(threshold=0.9, heads=[[0, 1]], mlps=[0, 1], score=0.93),
                circuit(threshold=0.8, heads=[[0, 1], [3, 2]], mlps=[0], score=0.8123),
            ]
        ),
    )
    drops = {"L3.H2": 12.34, "L0.H1": 47.06, "L1.H0": -2.0}
    write_json_atomic(
        tmp_path / "shared_circuits.json",
        example(
            SharedCircuits,
            cross_task_percent={
                "number_words": {"digits": 48.44, "number_words": 81.0},
                "digits": {"digits": 80.5, "number_words": 87.36, "months": 43.66},
            },
            single_head_ablation=[
                row(
                    SharedCircuits,
                    "single_head_ablation",
                    component=c,
                    layer=int(c[1]),
                    head=int(c[-1]),
                    drop_points=d,
                    task="digits",
                )
                for c, d in drops.items()
            ]
            + [row(SharedCircuits, "single_head_ablation", component="L5.H5", drop_points=99.0, task="months")],
        ),
    )
    write_json_atomic(
        tmp_path / "mlp_ablation.json",
        example(
            MlpAblation,
            mlp_effects=[
                row(MlpAblation, "mlp_effects", component=f"MLP{i}", task="digits", **{"kept_%": kept})
                for i, kept in enumerate([37.4, 95.0, 28.71, 67.3])
            ]
            + [row(MlpAblation, "mlp_effects", component="MLP1", task="months", **{"kept_%": 1.0})],
        ),
    )
    write_json_atomic(
        tmp_path / "successor_heads.json",
        example(
            SuccessorHeads,
            top_k=1,
            over="family",
            focus="digits",
            overview=[
                row(SuccessorHeads, "overview", family="digits", best_next="L9.H1", best_next_score=0.874),
                row(SuccessorHeads, "overview", family="number_words", best_next="L2.H8", best_next_score=0.3),
            ],
            logit_lens_first_top1=[
                row(SuccessorHeads, "logit_lens_first_top1", layer=-2, first_top1=1, stable_top1=3),
                row(SuccessorHeads, "logit_lens_first_top1", layer=8, first_top1=4, stable_top1=2),
                row(SuccessorHeads, "logit_lens_first_top1", layer=9, first_top1=11, stable_top1=11),
            ],
        ),
    )
    table = comparison_table(tmp_path)
    assert _ours(table, "numerals circuit at 80 %: heads") == "2: 0.1 3.2"
    assert _ours(table, "numerals circuit at 80 %: MLPs") == "1 kept: MLP0"
    assert _ours(table, "numerals circuit at 80 %: score") == "81.23 %"
    assert _ours(table, "numerals circuit on number-word data") == "48.4 %"
    assert _ours(table, "number-word circuit on numerals") == "87.4 %"
    assert _ours(table, "months circuit on numerals") == "43.7 %"
    assert _ours(table, "single-head ablation from the full model (numerals)") == "0.1 -47.1, 3.2 -12.3, 1.0 2.0 points"
    assert _ours(table, "MLP ablation, % of full kept (numerals)") == "MLP2 28.7, MLP0 37.4, MLP3 67.3 (the least kept)"
    assert _ours(table, "OV 'next' score of the paper's successor head (top-5)") == (
        "digits L9.H1 87.4 %, number words L2.H8 30.0 % (best head each; top-1 over the family)"
    )
    assert _ours(table, "logit lens: layer 9's top token is the answer") == (
        "first top-1 at layer 9 in 11 / 16 prompts (digits)"
    )
    # Nothing was written for these: they stay honest.
    assert _ours(table, "months circuit at 80 %: heads") == NOT_IN_RUN
    assert _ours(table, "greater-than probability difference") == NOT_IN_RUN

    # Where chapter 02 found `numbers` (SmolLM2: two-digit numbers) it stands for the paper's numerals, and says so
    write_json_atomic(
        tmp_path / "circuit_numbers.json",
        CircuitFile(circuits=[circuit(threshold=0.8, task="numbers", heads=[[2, 0]], mlps=[1, 4], score=0.85)]),
    )
    shared = SharedCircuits.from_json(json.loads((tmp_path / "shared_circuits.json").read_text()))
    cross = {"number_words": {"numbers": 40.0}, "numbers": {"number_words": 12.3, "months": 3.4}}
    write_json_atomic(tmp_path / "shared_circuits.json", replace(shared, cross_task_percent=cross))
    table = comparison_table(tmp_path)
    note = " (the numbers task: two-digit numbers)"
    assert _ours(table, "numerals circuit at 80 %: heads") == "1: 2.0" + note
    assert _ours(table, "numerals circuit at 80 %: MLPs") == "2 kept: MLP1 MLP4" + note
    assert _ours(table, "numerals circuit on number-word data") == "40.0 %" + note
    assert _ours(table, "number-word circuit on numerals") == "12.3 %" + note
    assert _ours(table, "months circuit on numerals") == "3.4 %" + note
    assert _ours(table, "single-head ablation from the full model (numerals)") == NOT_IN_RUN  # rows name digits


def test_scores_show_in_sample_interval_and_held_out(tmp_path):
    write_json_atomic(
        tmp_path / "circuit_digits.json",
        CircuitFile(
            circuits=[
                circuit(
                    threshold=0.8,
                    heads=[[0, 1]],
                    mlps=[0],
                    score=0.8123,
                    score_ci95=[0.781, 0.8402],
                    heldout={"seed": 1000, "n_prompts": 21, "score": 0.7456, "ci95": [0.70, 0.79]},
                ),
            ]
        ),
    )
    table = comparison_table(tmp_path)
    assert _ours(table, "numerals circuit at 80 %: score") == (
        "81.23 % in-sample [78.1, 84.0]; held-out 74.56 % [70.0, 79.0] (21 prompts)"
    )
    assert "held-out" in table.set_index("quantity").loc["numerals circuit at 80 %: score", "what differs"]


def test_greater_than_pd_is_labelled_with_what_it_measures(tmp_path):
    # Only the behaviour table: the next-token PD is labelled (it is the tens-digit approximation for digit tokens).
    write_json_atomic(
        tmp_path / "behaviour.json",
        example(
            Behaviour,
            rows=[row(Behaviour, "rows", task="greater_than", template="pure", direction="increasing", prob_diff=0.3)],
        ),
    )
    table = comparison_table(tmp_path)
    assert _ours(table, "greater-than probability difference") == (
        "30.0 % (next-token PD: the tens-digit approximation where years split into digits)"
    )
    assert _ours(table, "greater-than circuit: score") == NOT_IN_RUN
    # With a circuit record the exact two-digit PD is read instead, and the circuit's two scores are told apart.
    write_json_atomic(
        tmp_path / "circuit_greater_than.json",
        CircuitFile(
            circuits=[
                circuit(
                    threshold=0.8,
                    heads=[[5, 5], [9, 1]],
                    mlps=[8, 9],
                    score=0.85,
                    n_prompts=20,
                    filter="year",
                    metric="prob_diff",
                    pruning_metric="tens-digit prob_diff",
                    exact_prob_diff={
                        "mode": "digit",
                        "full": 0.5234,
                        "circuit": 0.4,
                        "score": 0.7642,
                        "ci95": [0.7, 0.8],
                    },
                    heldout={
                        "seed": 1000,
                        "n_prompts": 18,
                        "score": 0.8,
                        "ci95": [0.75, 0.85],
                        "exact_prob_diff": {
                            "mode": "digit",
                            "full": 0.5,
                            "circuit": 0.35,
                            "score": 0.7,
                            "ci95": [0.6, 0.8],
                        },
                    },
                ),
            ]
        ),
    )
    table = comparison_table(tmp_path)
    assert _ours(table, "greater-than probability difference") == (
        "52.3 % (exact two-digit PD by the chain rule, 20 prompts, filter: year)"
    )
    assert _ours(table, "greater-than circuit: heads") == "2: 5.5 9.1"
    assert _ours(table, "greater-than circuit: MLPs") == "2 kept: MLP8 MLP9"
    assert _ours(table, "greater-than circuit: score") == (
        "tens-digit prob_diff: 85.00 % in-sample; held-out 80.00 % [75.0, 85.0] (18 prompts);"
        " exact two-digit PD: 76.42 % [70.0, 80.0] in-sample, 70.00 % [60.0, 80.0] held-out"
    )
