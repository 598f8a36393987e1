import pytest
import torch
from conftest import o_proj, raw_head_mean_replaced_logits

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError
from seqcirc_utils.core.types import head
from seqcirc_utils.evaluation.nulls import matched_random_circuits
from seqcirc_utils.mechanisms.editing import (
    dose_response,
    format_direction,
    format_targets,
    function_edit,
    in_prompt_flags,
    keyed_mean_difference,
    match_prompts,
    matched_targets,
    mean_activations,
    member_key,
    random_directions,
    random_halves_directions,
    random_heads_same_layers,
    replaced_logits,
    replaced_predictions,
    rescaled,
    steered_logits,
    steering_test,
)
from seqcirc_utils.mechanisms.knockout import member_offsets
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.scoring.ablation import Ablator, component_hook_name
from seqcirc_utils.tasks.datasets import make_dataset


def _block(model, layer):
    hf = model.original_model
    return hf.transformer.h[layer] if hasattr(hf, "transformer") else hf.model.layers[layer]


@pytest.fixture(scope="module")
def inc_dec(tiny_llama):
    model, _ = tiny_llama
    inc = make_dataset(model.tokenizer, "digits", template="comma", n=16, seed=0)
    dec = make_dataset(model.tokenizer, "digits", template="comma", n=24, seed=1, direction="decreasing")
    return inc, dec


# --------------------------------------------------------------------------- steering


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_steering_with_alpha_zero_is_the_identity_and_matches_a_raw_hook(request, which):
    model, info = request.getfixturevalue(which)
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=2)
    ab = Ablator(model, info, ds)
    direction = torch.randn(info.d_model, generator=torch.Generator().manual_seed(0))
    clean = final_logits(model, ds.tokens)
    for layer in range(info.n_layers):
        assert torch.allclose(steered_logits(ab, layer, direction, 0.0), clean, atol=1e-4)
    alpha = 3.0

    def add(mod, args, out):  # independent: a plain torch forward hook on the HF decoder block
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden.clone()
        hidden[:, -1] += alpha * direction
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    for layer in sorted({0, info.n_layers // 2, info.n_layers - 1}):  # the first, a middle and the last block
        ours = steered_logits(ab, layer, direction, alpha)
        handle = _block(model, layer).register_forward_hook(add)
        with torch.no_grad():
            ref = model.original_model(ds.tokens).logits[:, -1]
        handle.remove()
        assert torch.allclose(ours, ref, atol=1e-4), layer
        assert not torch.allclose(ours, clean, atol=1e-3), layer


def test_random_directions_have_the_norm_and_are_seeded():
    d = torch.arange(6, dtype=torch.float32)
    a, b = random_directions(d, 3, seed=4), random_directions(d, 3, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [float(x.norm()) for x in a] == pytest.approx([float(d.norm())] * 3)
    assert not torch.allclose(a[0], a[1])


def test_keyed_mean_difference_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    to, frm = torch.randn(7, 4, generator=g), torch.randn(5, 4, generator=g)
    to_keys, from_keys = ["a", "a", "b", "c", "c", "c", "d"], ["b", "a", "b", "c", "e"]
    diff, common = keyed_mean_difference(to, to_keys, frm, from_keys)
    assert common == ["a", "b", "c"]
    expected = ((to[0] + to[1]) / 2 - frm[1] + to[2] - (frm[0] + frm[2]) / 2 + to[3:6].mean(0) - frm[3]) / 3
    assert torch.allclose(diff, expected, atol=1e-6)
    with pytest.raises(TooFewPromptsError, match="no member key"):
        keyed_mean_difference(to, to_keys, frm, ["x"] * 5)


def test_format_direction_and_targets(tiny_gpt2):
    model, info = tiny_gpt2
    digits = make_dataset(model.tokenizer, "digits", template="pure", n=64, seed=0)  # GPT-2: digits 0..99
    words = make_dataset(model.tokenizer, "number_words", template="pure", n=24, seed=0)
    d, keys = format_direction(model, info.n_layers - 1, digits, words)
    assert d.shape == (info.d_model,) and keys and all(len(k) == 4 for k in keys)
    targets = format_targets(model.tokenizer, digits, "number_words")
    for p, t in zip(digits.prompts, targets):
        word = (
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"][int(p.answer)]
            if int(p.answer) <= 10
            else None
        )
        if word is not None and t is not None:
            assert model.tokenizer(" " + word)["input_ids"][0] in t
    months = format_targets(model.tokenizer, digits, "months")
    assert all(t is None for p, t in zip(digits.prompts, months) if int(p.answer) in (0,) or int(p.answer) > 12)
    ab = Ablator(model, info, digits)
    table = dose_response(ab, info.n_layers - 1, d, [0.0, 2.0], "number_words", n_random=2, seed=0, progress=False)
    assert len(table) == 2 * 3 and set(table["direction"]) == {"format", "random"}
    zero = table[(table["alpha"] == 0.0)]
    clean_pred = ab.full_logits.argmax(-1)
    keep = [i for i, t in enumerate(targets) if t is not None]
    acc = sum(int(clean_pred[i]) == int(digits.answer_ids[i]) for i in keep) / len(keep)
    assert zero["correct"].tolist() == pytest.approx([acc] * 3)


# --------------------------------------------------------------------------- next -> prev


def test_matching_pairs_prompts_with_the_same_members(inc_dec):
    inc, dec = inc_dec
    t_idx, s_idx = match_prompts(inc, dec, seed=0)
    assert t_idx and len(t_idx) == len(s_idx)
    for i, j in zip(t_idx, s_idx):
        assert sorted(inc.prompts[i].members, key=int) == sorted(dec.prompts[j].members, key=int)
    dec_sets = {frozenset(p.members) for p in dec.prompts}
    assert t_idx == [i for i, p in enumerate(inc.prompts) if frozenset(p.members) in dec_sets]
    assert member_key(dec, s_idx[0]) == tuple(sorted(int(m) for m in dec.prompts[s_idx[0]].members))


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_mean_replacement_matches_a_raw_pytorch_hook(request, which):
    model, info = request.getfixturevalue(which)
    inc = make_dataset(model.tokenizer, "digits", template="comma", n=8, seed=0)
    dec = make_dataset(model.tokenizer, "digits", template="comma", n=8, seed=1, direction="decreasing")
    ab = Ablator(model, info, inc)
    layer, h = info.n_layers - 1, 2
    values = mean_activations(model, dec.tokens, [component_hook_name(head(layer, h))], batch_size=3)
    ours = replaced_logits(ab, [head(layer, h)], values)
    ref = raw_head_mean_replaced_logits(model, info, layer, h, dec.tokens, inc.tokens)
    assert torch.allclose(ours, ref, atol=1e-4)
    assert torch.equal(replaced_logits(ab, [], values), ab.full_logits)


def _raw_multi_head_mean_replaced_logits(model, info, heads, source_tokens, target_tokens):
    """Independent reference on the HF modules: the final-position logits of ``target_tokens`` with every head of
    ``heads`` (``(layer, index)`` pairs, any layers) replaced at every position by its per-position mean over
    ``source_tokens`` (plain torch pre-hooks on the output projections)."""
    layers = sorted({l for l, _ in heads})
    captured: dict[int, torch.Tensor] = {}
    handles = [
        o_proj(model, l).register_forward_pre_hook(lambda mod, args, l=l: captured.__setitem__(l, args[0].mean(0)))
        for l in layers
    ]
    with torch.no_grad():
        model.original_model(source_tokens)
    for h in handles:
        h.remove()

    def replace(l):
        def hook(mod, args):
            x = args[0].clone()
            for layer, i in heads:
                if layer == l:
                    sl = slice(i * info.d_head, (i + 1) * info.d_head)
                    x[:, :, sl] = captured[l][:, sl]
            return (x,)

        return hook

    handles = [o_proj(model, l).register_forward_pre_hook(replace(l)) for l in layers]
    try:
        with torch.no_grad():
            return model.original_model(target_tokens).logits[:, -1]
    finally:
        for h in handles:
            h.remove()


def test_replaced_predictions_share_work_and_match_raw_hooks(tiny_llama, inc_dec):
    model, info = tiny_llama
    inc, dec = inc_dec
    ab = Ablator(model, info, inc)
    top = info.n_layers - 1
    sets = [[head(0, 1), head(top, 0)], [], [head(0, 1), head(top, 2)], [head(0, 1), head(top, 0)], [head(top, 1)]]
    names = sorted({component_hook_name(h) for s in sets for h in s})
    values = mean_activations(model, dec.tokens, names)
    preds = replaced_predictions(ab, sets, values)
    for s, pred in zip(sets, preds):
        assert torch.equal(pred, replaced_logits(ab, s, values).argmax(-1).cpu())
        if s:
            ref = _raw_multi_head_mean_replaced_logits(
                model, info, [(h.layer, h.index) for h in s], dec.tokens, inc.tokens
            )
            assert torch.equal(pred, ref.argmax(-1).cpu())
    assert torch.equal(preds[1], ab.full_logits.argmax(-1).cpu())
    with pytest.raises(ParameterError, match="not an attention head"):
        from seqcirc_utils.core.types import mlp

        replaced_predictions(ab, [[mlp(0)]], values)


def test_in_prompt_flags_match_a_loop(tiny_gpt2):
    model, _ = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", template="comma", n=6, seed=3)
    tok = model.tokenizer
    assert in_prompt_flags(tok, ds, ds.incorrect_ids) == [True] * len(ds)  # the last member shown
    flags = in_prompt_flags(tok, ds, ds.answer_ids)
    for p, f in zip(ds.prompts, flags):
        texts = {tok.decode([t]).strip() for t in p.tokens[1:]} - {""}  # position 0: the prefix token
        assert f == (tok.decode([p.answer_id]).strip() in texts)
    assert not any(flags)  # an increasing sequence's answer is not among its members


def test_function_edit_control_null_and_effect_match_loops(tiny_llama, inc_dec):
    model, info = tiny_llama
    inc, dec = inc_dec
    same = make_dataset(model.tokenizer, "digits", template="comma", n=96, seed=7)
    ab = Ablator(model, info, inc)
    heads = [head(0, 1), head(1, 0)]
    randoms = random_heads_same_layers(info, heads, n_samples=3, seed=0)
    assert all(sorted(h.layer for h in r) == [0, 1] and not set(r) & set(heads) for r in randoms)
    res = function_edit(ab, dec, same, heads, shift=-1, n_draws=7, n_show=2, seed=3, n_resamples=200)
    assert res.table["edit"].tolist() == [
        "none",
        "successor heads",
        "ablation control",
        "random heads 0",
        "random heads 1",
    ]
    t_idx, (s_idx, c_idx) = matched_targets(inc, [dec, same], seed=3)
    assert res.n_matched == len(t_idx) > 0 and res.n_target == len(inc)
    sub = inc.subset(t_idx)
    tok = model.tokenizer

    def hits(logits):
        return torch.tensor(
            [o == -1 for o in member_offsets(tok, sub, logits.argmax(-1).cpu()[t_idx])], dtype=torch.float64
        )

    pairs = [(h.layer, h.index) for h in heads]
    edit = hits(_raw_multi_head_mean_replaced_logits(model, info, pairs, dec.tokens[s_idx], inc.tokens))
    control = hits(_raw_multi_head_mean_replaced_logits(model, info, pairs, same.tokens[c_idx], inc.tokens))
    rows = res.table.set_index("edit")
    assert rows.loc["successor heads", "hit"] == pytest.approx(float(edit.mean()))
    assert rows.loc["ablation control", "hit"] == pytest.approx(float(control.mean()))
    assert res.effect["effect"] == pytest.approx(float((edit - control).mean()))
    lo, hi = res.effect["effect_ci95"]
    assert lo <= res.effect["effect"] + 1e-12 and hi >= res.effect["effect"] - 1e-12
    assert res.effect["n_clusters"] == sub.n_sequences
    # the null: the same draws edited one by one
    draws = matched_random_circuits(info, heads, 7, 3, exclude_own=True)
    names = sorted({component_hook_name(h) for d in draws for h in d} | {component_hook_name(h) for h in heads})
    values = mean_activations(model, dec.tokens[s_idx], names)
    loop = [float(hits(replaced_logits(ab, sorted(d), values)).mean()) for d in draws]
    assert res.null.null == pytest.approx(loop) and res.null.n_draws == 7
    assert res.null.observed == pytest.approx(float(edit.mean()))
    assert res.null.p_value == pytest.approx((1 + sum(v >= res.null.observed for v in loop)) / 8)
    assert rows.loc["random heads 0", "hit"] == pytest.approx(loop[0])
    with pytest.raises(ParameterError, match="token length"):
        function_edit(ab, make_dataset(model.tokenizer, "digits", template="pure", n=4, seed=0), same, heads, shift=-1)


def test_random_halves_directions_match_a_loop():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g)
    ds = random_halves_directions([a, b], 3, norm=2.0, seed=9)
    gen = torch.Generator().manual_seed(9)
    for d in ds:
        pa, pb = torch.randperm(5, generator=gen), torch.randperm(4, generator=gen)
        first = torch.cat([a[pa[:2]], b[pb[:2]]]).mean(0)
        second = torch.cat([a[pa[2:]], b[pb[2:]]]).mean(0)
        ref = first - second
        assert torch.allclose(d, ref / ref.norm() * 2.0, atol=1e-6)
    assert torch.allclose(rescaled(torch.tensor([3.0, 4.0]), 10.0), torch.tensor([6.0, 8.0]))
    # a constant shift between the groups (the "format") cancels: only within-group noise is left
    shifted = random_halves_directions([a, a + 100.0], 1, norm=1.0, seed=0)[0]
    assert float(shifted.abs().max()) <= 1.0
    with pytest.raises(TooFewPromptsError):
        random_halves_directions([a, b[:1]], 1, 1.0)


def test_steering_test_matches_a_loop(tiny_gpt2):
    model, info = tiny_gpt2
    digits = make_dataset(model.tokenizer, "digits", template="pure", n=64, seed=0)
    words = make_dataset(model.tokenizer, "number_words", template="pure", n=24, seed=0)
    layer = info.n_layers - 1
    d, _ = format_direction(model, layer, digits, words)
    ab = Ablator(model, info, digits)
    base = {"gaussian": random_directions(d, 3, seed=1), "halves": random_directions(d, 2, seed=5)}
    res = steering_test(ab, layer, d, 2.0, "number_words", base, seed=0, n_resamples=100)
    targets = format_targets(model.tokenizer, digits, "number_words")
    keep = [i for i, t in enumerate(targets) if t is not None]

    def hit(direction):
        pred = steered_logits(ab, layer, direction, 2.0).argmax(-1).tolist()
        return sum(pred[i] in targets[i] for i in keep) / len(keep)

    assert res.effect["hit"] == pytest.approx(hit(d)) and res.effect["n_prompts"] == len(keep)
    for kind, dirs in base.items():
        assert res.nulls[kind].null == pytest.approx([hit(x) for x in dirs])
        assert res.nulls[kind].n_draws == len(dirs)
    curve = dose_response(ab, layer, d, [2.0], "number_words", n_random=0, progress=False)
    assert curve["hit"].tolist() == pytest.approx([res.effect["hit"]])


def test_activation_editing_record_embeds_disjoint_splits(tiny_gpt2):
    from record_fixtures import example

    from seqcirc_utils.core.options import SELECTION_ROLES
    from seqcirc_utils.core.result_records import ActivationEditing
    from seqcirc_utils.discovery.pipeline import split_discovery_datasets
    from seqcirc_utils.tasks.datasets import TaskDataset

    model, _ = tiny_gpt2
    sets = split_discovery_datasets(
        model, "tiny-gpt2", "number_words", roles=SELECTION_ROLES, seed=0, n=12, template="comma", filter_correct=False
    )
    record = example(
        ActivationEditing,
        selection_dataset={"number_words": sets["selection"].to_json()},
        evaluation_dataset={"number_words": sets["evaluation"].to_json()},
    )
    back = ActivationEditing.from_json(record.to_json())
    sel = TaskDataset.from_json(back.selection_dataset["number_words"])
    ev = TaskDataset.from_json(back.evaluation_dataset["number_words"])
    assert sel.n_sequences > 0 and ev.n_sequences > 0 and not set(sel.sequence_ids) & set(ev.sequence_ids)


# --------------------------------------------------------------------------- embedded model


def test_embedded_number_word_steering_beats_random_directions(smollm):
    """SmolLM2: adding the number-word minus digit direction after a late layer turns digit answers into
    number words far more often than random directions of the same norm (measured: see the report)."""
    from seqcirc_utils.discovery.pipeline import discovery_dataset
    from seqcirc_utils.mechanisms.ov_scores import ov_scores, top_heads

    model, info = smollm
    digits = discovery_dataset(model, "smollm2-135m", "digits", template="among_words", n=12, seed=0)
    words = make_dataset(model.tokenizer, "number_words", template="among_words", n=24, seed=0)
    layer = int(top_heads(ov_scores(model, "digits", kinds=["next"], progress=False), "next", 1)["layer"][0])
    d, _ = format_direction(model, layer, digits, words)
    table = dose_response(
        Ablator(model, info, digits), layer, d, [0.0, 1.0], "number_words", n_random=2, progress=False
    )
    at = table[table["alpha"] == 1.0].groupby("direction")["hit"].max()
    print(table)
    assert at["format"] >= 0.4 and at["random"] <= 0.1
    assert table[table["alpha"] == 0.0]["hit"].max() == 0.0


def test_findings_paragraph_states_control_interval_n_and_p():
    from record_fixtures import example, row

    from seqcirc_utils.core.records import NullDistribution
    from seqcirc_utils.core.result_records import ActivationEditing
    from seqcirc_utils.evaluation.nulls import null_summary
    from seqcirc_utils.report.findings import activation_editing

    def null(observed, values):
        return NullDistribution(
            statistic="hit",
            observed=observed,
            **null_summary(observed, values),
            matched={},
            seed=0,
            null=values,
            circuit=[],
        )

    effect = row(
        ActivationEditing,
        "edit_effects",
        task="digits",
        edit_kind="next -> prev",
        hit=0.0,
        control_hit=0.0,
        effect=0.0,
        effect_ci95=[0.0, 0.0],
        n_clusters=3,
        n_matched=15,
        hit_in_prompt=None,
    )
    steer = row(
        ActivationEditing,
        "steering_effects",
        pair="digits -> months",
        hit=0.75,
        hit_ci95=[0.5, 0.9],
        n_prompts=16,
        n_clusters=3,
    )
    record = example(
        ActivationEditing,
        successor_heads=["L23.H3"],
        steer_layer=23,
        steer_alpha=1.0,
        edit_effects=[effect],
        edit_null={"digits": null(0.0, [0.0] * 99)},
        steering_effects=[steer],
        steering_null={
            "digits -> months": {
                "gaussian": null(0.75, [0.0] * 99),
                "random halves": null(0.75, [0.8] * 99),
                "unrelated": null(0.75, [0.0]),
            }
        },
    )
    text = activation_editing({ActivationEditing.file: ActivationEditing.from_json(record.to_json())})
    for fragment in (
        "digits 0 % against 0 % for the ablation-only control (+0 points [+0, +0], n = 15 evaluation prompts, 3 sequences; "
        "not distinguishable from the control)",
        "99 same-layer random head sets edited the same way (p = 1.00; not distinguishable from random)",
        "digits -> months 75 % [50, 90] (n = 16 evaluation prompts, 3 sequences; gaussian 0 % (percentile 100, "
        "p = 0.01, n = 99), random halves 80 % (percentile 0, p = 1.00, n = 99; not distinguishable), "
        "unrelated 0 % (one direction: a reference, not a null))",
        "Adding 1 times",
    ):
        assert fragment in text, (fragment, text)
