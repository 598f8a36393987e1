"""Findings readers of the sharing-by-threshold, step-k, head -> MLP and lens-by-length results (issue 10)."""

from seqcirc_utils.report.findings import UNREADABLE, decreasing_circuits, greater_than_overlap, mlp_ablation, \
    shared_circuits, successor_heads


def test_readers_summarise_the_new_result_keys():
    shared = {"threshold": 0.8, "method": "sweep", "template": "among_words", "shared": ["MLP0"],
              "summary": [{"task": "digits", "threshold": 0.8, "heads": 3, "mlps": 2, "score": 81.0, "heldout_%": 74.6}],
              "cross_task_percent": {}}
    by_thr = {"thresholds": [0.9, 0.8], "shared": {"0.9": ["MLP0", "L1.H1"], "0.8": ["MLP0"]},
              "scores": [{"threshold": 0.9, "data": "digits held-out", "beats_random": True},
                         {"threshold": 0.9, "data": "digits in-sample", "beats_random": False},
                         {"threshold": 0.8, "data": "digits held-out", "beats_random": False}]}
    text = shared_circuits({"shared_circuits.json": shared, "shared_by_threshold.json": by_thr})
    assert "at 90 % 2 components, above every random circuit of that size on held-out prompts for 1 of 1" in text
    assert "at 80 % 1 component," in text and "for 0 of 1" in text
    assert "digits 3 heads + 2 MLPs (81 %; held out 75 %); 1 component is shared by all 1" in text

    gt = {"sequence_task": "digits", "shared_heads": [], "estimated_drop_rank_correlation": 0.1,
          "analogous_ablation": [{"ablated": a, "task scored": s, "inside": "full model", "drop_points": 1.0}
                                 for a, s in (("digits heads", "greater_than"), ("random heads", "greater_than"),
                                              ("greater_than heads", "digits"), ("random heads", "digits"))]}
    ladder = {"thresholds": [0.97, 0.5], "method": "fast", "lost_at": {"digits": 0.5, "months": None}}
    text = greater_than_overlap({"greater_than_overlap.json": gt, "greater_than_thresholds.json": ladder})
    assert "digits from 50 %" in text and "months never (down to 50 %)" in text

    dec = {"task": "digits", "head_overlap": [], "cross_task_percent": {}, "shared_heads": [],
           "summary": [{"config": "inc-3"}]}
    step = {"task": "digits", "step_k": 2, "error": None,
            "behaviour": [{"family": "digits", "step": 1, "n": 8, "top1_accuracy": 1.0},
                          {"family": "digits", "step": 2, "n": 8, "top1_accuracy": 0.5}],
            "overlap": [{"kind": "all", "intersection": 5, "jaccard": 0.5},
                        {"kind": "heads", "intersection": 2, "jaccard": 0.25}],
            "ov_groups": [{"heads": "step-2 circuit", "mean_add2": 0.3}, {"heads": "all heads", "mean_add2": 0.1}]}
    text = decreasing_circuits({"decreasing_circuits.json": dec, "step_k_circuits.json": step})
    assert "50 % at step 2" in text and "shares 2 heads" in text and "0.30 against 0.10" in text

    mlps = {"key_mlp": "MLP0", "mlp_effects": [{"task": "digits", "component": "MLP0", "kept_%": 10.0}],
            "neuron_ablation": [], "head_to_mlp": [
                {"task": "digits", "receiver": "MLP9", "sender": "L3.H1", "effect": -0.05},
                {"task": "digits", "receiver": "MLP9", "sender": "L4.H2", "effect": -0.2}]}
    assert "MLP9 <- L4.H2 for digits (-20.0 points)" in mlp_ablation({"mlp_ablation.json": mlps})

    succ = {"overview": [], "logit_lens_by_length": [
        {"direction": "decreasing", "length": 3, "median_first_top1": 20.0},
        {"direction": "decreasing", "length": 5, "median_first_top1": None}]}
    text = successor_heads({"successor_heads.json": succ})
    assert "layer 20 (decreasing, 3 members)" in text and "5 members" not in text and UNREADABLE not in text
