"""Chapter 10 against its null: selection apart from evaluation, same-layer random knockouts, frozen-scale DLA
(checked against plain torch hooks on the HF modules), clean-prompt replacements, and the skip loop."""

from __future__ import annotations

import pytest
import torch
from conftest import o_proj
from record_fixtures import example

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError
from seqcirc_utils.core.options import SELECTION_ROLES
from seqcirc_utils.core.result_records import Knockout
from seqcirc_utils.core.types import head
from seqcirc_utils.discovery.pipeline import build_or_skip, split_discovery_datasets
from seqcirc_utils.mechanisms.knockout import (
    ablated_logits,
    compensation,
    knockout_null,
    replacement_ablator,
    replacement_dataset,
    resample_donors,
)
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import TaskDataset, make_dataset, sequence_overlap

# --------------------------------------------------------------------------- frozen-scale DLA vs raw hooks


def _raw_frozen_dla(model, info, ds, knocked_out):
    """Independent reference on the HF modules with torch forward hooks: per head, the mean over prompts of its
    final-position output ``z_h @ W_O[h]`` read through the final norm with the *clean* run's scale frozen,
    dotted with ``W_U[answer] - W_U[last member]``; the knockout replaces the heads' input to the output
    projection by its per-position mean over the corrupted prompts. Returns ``(clean [n_heads_total],
    knockout [n_heads_total])`` in ``info.heads`` order."""
    hf = model.original_model
    gpt2 = hasattr(hf, "transformer")
    norm = hf.transformer.ln_f if gpt2 else hf.model.norm
    W_U = hf.lm_head.weight  # [vocab, d_model]
    d_head = info.d_head

    def proj_weight(layer):  # [n_heads * d_head, d_model]: out = z @ W (+ bias)
        proj = o_proj(model, layer)
        return proj.weight if gpt2 else proj.weight.T

    def run(tokens, replace=None):
        zs, norm_in = {}, []
        handles = []
        for layer in range(info.n_layers):

            def pre(mod, args, layer=layer):
                x = args[0]
                if replace and layer in replace:
                    x = x.clone()
                    for sl, value in replace[layer]:
                        x[:, :, sl] = value[:, sl]
                zs[layer] = x.detach().clone()
                return (x,)

            handles.append(o_proj(model, layer).register_forward_pre_hook(pre))
        handles.append(norm.register_forward_pre_hook(lambda mod, args: norm_in.append(args[0].detach().clone())))
        try:
            with torch.no_grad():
                hf(tokens)
        finally:
            for h in handles:
                h.remove()
        return zs, norm_in[0][:, -1]  # final-position norm input [batch, d_model]

    def scale_of(x):  # the norm's 1 / RMS (RMSNorm) or 1 / std (LayerNorm), by hand
        eps = norm.eps if gpt2 else norm.variance_epsilon
        if gpt2:
            return 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
        return 1 / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def dla(zs, scale):
        direction = W_U[ds.answer_ids] - W_U[ds.incorrect_ids]  # [batch, d_model]
        out = []
        for h in info.heads:
            sl = slice(h.index * d_head, (h.index + 1) * d_head)
            part = zs[h.layer][:, -1, sl] @ proj_weight(h.layer)[sl]  # [batch, d_model]
            if gpt2:
                part = part - part.mean(-1, keepdim=True)
            out.append(float(((part * scale * norm.weight) * direction).sum(-1).mean()))
        return torch.tensor(out)

    clean_z, clean_in = run(ds.tokens)
    scale = scale_of(clean_in)
    corrupted_z, _ = run(ds.corrupted_tokens)
    replace = {}
    for h in knocked_out:
        sl = slice(h.index * d_head, (h.index + 1) * d_head)
        replace.setdefault(h.layer, []).append((sl, corrupted_z[h.layer].mean(0)))
    ko_z, _ = run(ds.tokens, replace)
    return dla(clean_z, scale), dla(ko_z, scale)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_frozen_scale_dla_equals_a_raw_hook_computation(request, which):
    model, info = request.getfixturevalue(which)
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=8, seed=2)
    ab = Ablator(model, info, ds)
    out = [head(0, 1)]
    df = compensation(model, ds, ab, out)
    raw_clean, raw_ko = _raw_frozen_dla(model, info, ds, out)
    assert torch.allclose(torch.tensor(df["dla_clean"].values, dtype=torch.float32), raw_clean, atol=1e-4)
    assert torch.allclose(torch.tensor(df["dla_knockout"].values, dtype=torch.float32), raw_ko, atol=1e-4)
    # the frozen scale matters: the run's own scale gives other numbers for the later heads
    own = compensation(model, ds, ab, out, frozen_scale=False)
    later = df["layer"] > 0
    assert not torch.allclose(
        torch.tensor(own.loc[later, "dla_knockout"].values),
        torch.tensor(df.loc[later, "dla_knockout"].values),
        atol=1e-5,
    )
    # a head below the knockout's layer writes the same output: with the frozen scale its DLA cannot move
    assert df.attrs["frozen_scale"] is True


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_knockout_null_matches_one_ablation_per_draw(request, which):
    model, info = request.getfixturevalue(which)
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=10, seed=4)
    ab = Ablator(model, info, ds)
    heads = [head(1, 0), head(1, 2)]
    res = knockout_null(ab, heads, n_draws=7, seed=3, progress=False, draws_per_pass=3)  # batches of 3, 3, 1
    drop = res.drop
    assert drop.n_draws == 7 and len(drop.null) == 7 and drop.statistic == "drop_points"
    assert drop.observed == pytest.approx(100 * (1 - ab.score_ablated(heads)), abs=1e-3)
    assert drop.matched["heads_per_layer"] == {"1": 2} and drop.matched["exclude_own"] is True
    from seqcirc_utils.evaluation.nulls import matched_random_circuits

    draws = matched_random_circuits(info, heads, 7, seed=3, exclude_own=True)
    expected = [100 * (1 - ab.fraction_of_full(ab.metric_value(ablated_logits(ab, sorted(d))))) for d in draws]
    assert drop.null == pytest.approx(expected, abs=1e-3)
    assert all(not set(heads) & d and {c.layer for c in d} == {1} for d in draws)
    assert drop.p_value == pytest.approx((1 + sum(v >= drop.observed for v in expected)) / 8)
    lo, hi = res.drop_ci95
    assert lo <= drop.observed <= hi
    # compensation: the table is compensation() with the frozen clean scale, and the null sums each draw's
    # other heads' DLA changes
    comp = compensation(model, ds, ab, heads).set_index("component")
    table = res.table.set_index("component")
    assert table["dla_knockout"].to_dict() == pytest.approx(comp["dla_knockout"].to_dict(), abs=1e-4)
    others = table[~table["knocked_out"]]
    assert res.compensation_total.observed == pytest.approx(float(others["change"].sum()), abs=1e-4)
    assert res.compensation_max.observed == pytest.approx(float(others["change"].max()), abs=1e-5)
    first = compensation(model, ds, ab, sorted(draws[0])).set_index("component")
    keep = ~first.index.isin([str(c) for c in draws[0]])
    assert res.compensation_total.null[0] == pytest.approx(float(first.loc[keep, "change"].sum()), abs=1e-4)
    assert ((table.loc[table["layer"] == 0, "change"]).abs() < 1e-5).all()  # heads below the knockout cannot move
    with pytest.raises(ParameterError, match="heads"):
        knockout_null(ab, [], n_draws=2, progress=False)


# --------------------------------------------------------------------------- replacements


def test_clean_replacements_use_clean_activations(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=8, seed=5)
    clean_ds = replacement_dataset(ds, "clean_mean")
    assert torch.equal(clean_ds.corrupted_tokens, ds.tokens) and torch.equal(clean_ds.tokens, ds.tokens)
    ab = replacement_ablator(model, info, ds, "clean_mean")
    name = "blocks.1.attn.hook_z"
    _, cache = model.run_with_cache(ds.tokens, names_filter=lambda n: n == name)
    assert torch.allclose(ab.values[name], cache[name].mean(0), atol=1e-5)
    donors = resample_donors(ds, seed=1)
    ids = ds.sequence_ids
    assert all(j != i for i, j in enumerate(donors))
    assert all(ids[j] != ids[i] for i, j in enumerate(donors)) or ds.n_sequences == 1
    res = replacement_ablator(model, info, ds, "clean_resample", seed=1)
    assert torch.allclose(res.values[name], cache[name][donors], atol=1e-5)
    assert replacement_dataset(ds, "corrupted_mean") is ds
    with pytest.raises(ParameterError, match="clean_mean"):
        replacement_dataset(ds, "noise")


# --------------------------------------------------------------------------- splits and the skip loop


def test_selection_and_evaluation_splits_are_sequence_disjoint(tiny_gpt2):
    model, _ = tiny_gpt2
    sets = split_discovery_datasets(
        model, "tiny-gpt2", "number_words", roles=SELECTION_ROLES, seed=1, n=12, template="comma", filter_correct=False
    )
    assert list(sets) == list(SELECTION_ROLES)
    assert sequence_overlap(sets["selection"], sets["evaluation"]) == 0
    assert sets["selection"].spec.split.role == "selection" and sets["evaluation"].spec.split.role == "evaluation"
    # the record embeds both, and their sequence identities stay disjoint through the JSON
    record = example(
        Knockout,
        tasks=["number_words"],
        selection_dataset={"number_words": sets["selection"].to_json()},
        evaluation_dataset={"number_words": sets["evaluation"].to_json()},
    )
    back = Knockout.from_json(record.to_json())
    sel = TaskDataset.from_json(back.selection_dataset["number_words"])
    ev = TaskDataset.from_json(back.evaluation_dataset["number_words"])
    assert not set(sel.sequence_ids) & set(ev.sequence_ids) and sel.n_sequences > 0 and ev.n_sequences > 0


def test_build_or_skip_skips_only_the_error_family():
    def build(name):
        if name == "few":
            raise TooFewPromptsError("only 2 prompts pass; need >= 6")
        if name == "bug":
            raise KeyError("a bug")
        return name.upper()

    built, skipped = build_or_skip(build, ["a", "few", "a", "b"])
    assert built == {"a": "A", "b": "B"} and skipped == {"few": "only 2 prompts pass; need >= 6"}
    with pytest.raises(KeyError):
        build_or_skip(build, ["a", "bug"])


# --------------------------------------------------------------------------- embedded model


def test_embedded_successor_knockout_beats_same_layer_random_on_held_apart_sequences(smollm):
    """SmolLM2, digits: the successor head chosen on the selection sequences, knocked out on the disjoint
    evaluation sequences, costs more than every one of 19 same-layer random knockouts (p = 0.05, the floor)."""
    from seqcirc_utils.mechanisms.knockout import select_successor_heads

    model, info = smollm
    sets = split_discovery_datasets(model, "smollm2-135m", "digits", seed=0, n=8, template="among_words", min_prompts=4)
    assert sequence_overlap(sets["selection"], sets["evaluation"]) == 0
    _, heads = select_successor_heads(
        model, info, {"digits": sets["selection"]}, n_heads=1, n_candidates=2, progress=False
    )
    res = knockout_null(Ablator(model, info, sets["evaluation"]), heads, n_draws=19, seed=0, progress=False)
    assert res.drop.observed > 20 and res.drop.observed > max(res.drop.null)
    assert res.drop.p_value == pytest.approx(1 / 20)
