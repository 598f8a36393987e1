"""Normalised faithfulness (empty-circuit floor): the empty circuit's metric against raw hooks, the two
ends of the scale, the refusal of a denominator whose interval includes 0, and cluster intervals in records."""

from __future__ import annotations

import pytest
import torch
from conftest import o_proj

from seqcirc_utils.core.errors import BaselineError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.pipeline import FAITHFULNESS_KEYS, check_faithfulness_baseline, score_with_ci
from seqcirc_utils.evaluation import planted as P
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import make_dataset


def _raw_everything_mean_ablated_logits(model, info, source_tokens, target_tokens):
    """Independent reference on the HF GPT-2 module: every head's input to its layer's output projection and
    every MLP's output replaced by their per-position means over ``source_tokens``. Final logits ``[batch, vocab]``."""
    hf = model.original_model
    blocks = hf.transformer.h
    z_mean, mlp_mean, handles = {}, {}, []
    for layer in range(info.n_layers):
        handles.append(
            o_proj(model, layer).register_forward_pre_hook(
                lambda mod, args, layer=layer: z_mean.__setitem__(layer, args[0].detach().mean(0))
            )
        )
        handles.append(
            blocks[layer].mlp.register_forward_hook(
                lambda mod, args, out, layer=layer: mlp_mean.__setitem__(layer, out.detach().mean(0))
            )
        )
    with torch.no_grad():
        hf(source_tokens)
    for h in handles:
        h.remove()
    handles = []
    for layer in range(info.n_layers):
        handles.append(
            o_proj(model, layer).register_forward_pre_hook(
                lambda mod, args, layer=layer: (z_mean[layer].expand_as(args[0]).clone(),)
            )
        )
        handles.append(
            blocks[layer].mlp.register_forward_hook(
                lambda mod, args, out, layer=layer: mlp_mean[layer].expand_as(out).clone()
            )
        )
    try:
        with torch.no_grad():
            return hf(target_tokens).logits[:, -1]
    finally:
        for h in handles:
            h.remove()


def test_empty_metric_equals_raw_hook_computation(tiny_gpt2):
    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", template="pure", n=8, seed=0, model_name="tiny-gpt2")
    ab = Ablator(model, info, ds, mode="mean", metric="logit_diff")
    logits = _raw_everything_mean_ablated_logits(model, info, ds.corrupted_tokens, ds.tokens)
    rows = torch.arange(len(ds))
    raw = logits[rows, ds.answer_ids] - logits[rows, ds.incorrect_ids]
    assert torch.allclose(ab.empty_values().double(), raw.double(), atol=1e-4)
    passes = ab.forward_passes
    ab.empty_values()
    assert ab.forward_passes == passes  # cached
    # not the full model's values: the floor is a different number
    assert not torch.allclose(raw, ab.metric_values(ab.full_logits), atol=1e-3)


@pytest.fixture(scope="module")
def planted():
    pm = P.build_planted_model()
    return pm, Ablator(pm.model, pm.info, P.planted_dataset(pm, n=16, seed=0), mode="mean", metric="logit_diff")


def test_full_is_one_empty_is_zero_and_planted_in_between(planted):
    pm, ab = planted
    full = score_with_ci(ab, pm.info.components, n_resamples=200)
    empty = score_with_ci(ab, [], n_resamples=200)
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-9) and empty["faithfulness"] == pytest.approx(
        0.0, abs=1e-9
    )
    assert full["faithfulness_ci95"] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert empty["empty_metric"] == pytest.approx(empty["circuit_metric"], abs=1e-9)
    one_route = score_with_ci(ab, [head(0, 0), head(1, 0)], n_resamples=200)
    e, f, c = one_route["empty_metric"], one_route["full_metric"], one_route["circuit_metric"]
    assert one_route["faithfulness"] == pytest.approx((c - e) / (f - e), rel=1e-5)  # float32 means
    assert 0.2 < one_route["faithfulness"] < 0.8  # one of two equal routes
    lo, hi = one_route["faithfulness_ci95"]
    assert lo <= one_route["faithfulness"] <= hi
    assert one_route["ci_unit"] == "sequence" and one_route["n_clusters"] == ab.dataset.n_sequences
    assert set(FAITHFULNESS_KEYS) <= set(one_route)


def test_denominator_interval_with_zero_is_refused(tiny_llama):
    """Answer == incorrect token: every logit difference is 0, so m(full) - m(empty) = 0 exactly."""
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    for p in ds.prompts:
        p.incorrect_id = p.answer_id
    ab = Ablator(model, info, ds, metric="logit_diff")
    with pytest.raises(BaselineError, match="must be positive and exclude 0") as err:
        check_faithfulness_baseline(ab, n_resamples=100)
    assert "\n" not in str(err.value)
    with pytest.raises(BaselineError):
        score_with_ci(ab, [head(0, 0), mlp(1)], n_resamples=100)


def test_embedded_faithfulness_and_cluster_interval(smollm):
    """SmolLM2, 16 digits prompts: the ends of the scale, and the record's cluster unit (few sequences)."""
    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=16, seed=0, model_name="smollm2-135m")
    ab = Ablator(model, info, ds, metric="logit_diff")
    assert score_with_ci(ab, info.components, n_resamples=200)["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    some = score_with_ci(ab, [c for c in info.components if c.layer < info.n_layers // 2], n_resamples=200)
    assert some["n_clusters"] == ds.n_sequences < len(ds)
    assert some["faithfulness_ci95"][0] <= some["faithfulness"] <= some["faithfulness_ci95"][1]
    assert some["empty_metric"] < some["full_metric"]


def test_score_columns_show_both_scores():
    from seqcirc_utils.discovery.pipeline import score_columns

    record = {
        "score": 0.8,
        "score_ci95": [0.7, 0.9],
        "faithfulness": 0.75,
        "faithfulness_ci95": [0.6, 0.85],
        "heldout": {
            "score": 0.6,
            "ci95": [0.5, 0.7],
            "n_prompts": 12,
            "faithfulness": 0.55,
            "faithfulness_ci95": [0.4, 0.7],
        },
    }
    cols = score_columns(record)
    assert cols["faithfulness_%"] == pytest.approx(75.0) and cols["faithfulness_ci95"] == "[60.0, 85.0]"
    assert cols["heldout_faithfulness_%"] == pytest.approx(55.0) and cols["heldout_ci95"] == "[50.0, 70.0]"
    old = score_columns({"score": 0.8, "score_ci95": [0.7, 0.9], "heldout": None})  # schema 2, no held-out
    assert old["faithfulness_ci95"] == "" and old["faithfulness_%"] != old["faithfulness_%"]  # NaN
