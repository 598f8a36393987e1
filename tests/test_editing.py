import pytest
import torch
from conftest import raw_head_mean_replaced_logits

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError
from seqcirc_utils.core.types import head
from seqcirc_utils.mechanisms.editing import (
    dose_response,
    format_direction,
    format_targets,
    function_edit,
    keyed_mean_difference,
    match_prompts,
    mean_activations,
    member_key,
    random_directions,
    random_heads_same_layers,
    replaced_logits,
    steered_logits,
)
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
    layer, alpha = 0, 3.0
    ours = steered_logits(ab, layer, direction, alpha)

    def add(mod, args, out):  # independent: a plain torch forward hook on the HF decoder block
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden.clone()
        hidden[:, -1] += alpha * direction
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = _block(model, layer).register_forward_hook(add)
    with torch.no_grad():
        ref = model.original_model(ds.tokens).logits[:, -1]
    handle.remove()
    assert torch.allclose(ours, ref, atol=1e-4)
    assert not torch.allclose(ours, clean, atol=1e-3)


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


def test_function_edit_rows(tiny_llama, inc_dec):
    model, info = tiny_llama
    inc, dec = inc_dec
    ab = Ablator(model, info, inc)
    heads = [head(1, 0)]
    randoms = random_heads_same_layers(info, heads, n_samples=2, seed=0)
    assert all(len(r) == 1 and r[0].layer == 1 and r[0] not in heads for r in randoms)
    table, meta = function_edit(ab, dec, heads, shift=-1, random_sets=randoms)
    assert table["edit"].tolist() == ["none", "successor heads", "random heads 0", "random heads 1"]
    t_idx, _ = match_prompts(inc, dec)
    assert meta["n_matched"] == len(t_idx)
    clean = ab.full_logits.argmax(-1)[t_idx]
    assert table.loc[0, "correct"] == pytest.approx(float((clean == inc.answer_ids[t_idx]).float().mean()))
    last = torch.tensor([int(inc.prompts[i].members[-1]) for i in t_idx])
    pred_digits = [model.tokenizer.decode([int(t)]).strip() for t in clean]
    hit = sum(d.isdigit() and int(d) == int(n) - 1 for d, n in zip(pred_digits, last)) / len(t_idx)
    assert table.loc[0, "hit"] == pytest.approx(hit)
    with pytest.raises(ParameterError, match="token length"):
        function_edit(ab, make_dataset(model.tokenizer, "digits", template="pure", n=4, seed=0), heads, shift=-1)


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
