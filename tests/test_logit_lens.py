"""Logit lens (last layer = the model's logits, middle layers = an independent HF computation and
TransformerLens' own lens) and direct logit attribution (parts sum to the model's logit difference)."""

import copy

import pytest
import torch

from seqcirc_utils.mechanisms import logit_lens as LL
from seqcirc_utils.models.loading import _tiny_hf_model
from seqcirc_utils.tasks.datasets import make_dataset


def _with_random_biases(model, seed: int = 0):
    """A copy with every bias (and norm weight) perturbed, so bias terms are exercised."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_last_layer_equals_model_logits(spec, request):
    model, info = request.getfixturevalue(spec.replace("-", "_"))
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0)
    logits, cache = model.run_with_cache(ds.tokens)
    last = LL.lens_logits(model, cache[f"blocks.{info.n_layers - 1}.hook_resid_post"])
    torch.testing.assert_close(last, logits, atol=1e-5, rtol=1e-5)
    res = LL.dataset_logit_lens(model, ds, progress=False)
    assert res.top1.shape == (info.n_layers + 1, 4, ds.seq_len)
    assert torch.equal(res.top1[-1], logits.argmax(-1))
    rows = torch.arange(4)
    ranks = (logits[rows, -1] > logits[rows, -1, ds.answer_ids][:, None]).sum(-1)
    assert torch.equal(res.target_rank[-1, rows, -1], ranks)


def test_middle_layers_match_hf_norm_and_transformer_lens(tiny_gpt2):
    """Layer l = ln_f(resid after block l) @ lm_head, computed with the HF modules; and TL's logit_lens agrees."""
    from transformer_lens.tools.analysis import logit_lens as tl_logit_lens

    model, info = tiny_gpt2
    hf, _ = _tiny_hf_model("tiny-gpt2")
    ds = make_dataset(model.tokenizer, "digits", n=3, seed=1)
    res = LL.dataset_logit_lens(model, ds, progress=False)
    with torch.no_grad():
        hidden = hf(ds.tokens, output_hidden_states=True).hidden_states  # embeddings, block 0, ...
        for e in range(info.n_layers):  # the last HF hidden state already has ln_f applied
            ref = hf.lm_head(hf.transformer.ln_f(hidden[e]))
            assert torch.equal(res.top1[e], ref.argmax(-1))
    tl = tl_logit_lens(model, ds.tokens, positions=None, top_k=1)
    assert torch.equal(tl.readout.top_ids[..., 0].cpu(), res.top1)


def test_first_top1_layer_and_table(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=3, seed=0)
    res = LL.dataset_logit_lens(model, ds, progress=False)
    # force a known answer trajectory: rank 0 from layer 0 on for prompt 0, never for prompt 1
    res.target_rank[:, 0, -1] = torch.tensor([3] + [0] * info.n_layers)
    res.target_rank[:, 1, -1] = 5
    res.target_rank[:, 2, -1] = torch.tensor([0, 2] + [0] * (info.n_layers - 1))
    assert res.first_top1_layer().tolist() == [0, -2, -1]
    assert res.stable_top1_layer().tolist() == [0, -2, 1]
    df = res.to_dataframe(model.tokenizer)
    assert len(df) == 3 * ds.seq_len * (info.n_layers + 1)
    assert set(df["layer"]) == set(range(-1, info.n_layers))
    final = res.to_dataframe(final_only=True)
    assert len(final) == 3 * (info.n_layers + 1) and final["is_final"].all()
    summary = LL.first_top1_summary(res)
    assert summary["first_top1"].sum() == 3


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_dla_sums_to_logit_difference(spec, request):
    model, info = request.getfixturevalue(spec.replace("-", "_"))
    model = _with_random_biases(model)
    ds = make_dataset(model.tokenizer, "digits", n=6, seed=0)
    res = LL.dataset_dla(model, ds, batch_size=4, progress=False)
    logits = model(ds.tokens)[:, -1]
    rows = torch.arange(6)
    ld = logits[rows, ds.answer_ids] - logits[rows, ds.incorrect_ids]
    torch.testing.assert_close(res.logit_diff, ld.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.values.sum(0), ld.detach(), atol=1e-4, rtol=1e-4)
    assert len(res.labels) == 1 + info.n_layers * (info.n_heads + 2) + 1
    df = res.to_dataframe()
    assert set(df["kind"]) == {"embed", "head", "attn_bias", "mlp", "bias"}
    if spec == "tiny-gpt2":  # LayerNorm bias and b_O are non-zero here
        assert df.set_index("component").loc["bias", "mean"] != 0.0
        assert df.set_index("component").loc["L0.attn_bias", "mean"] != 0.0


def test_dla_head_values_independent(tiny_llama):
    """A head's DLA = (z_h W_O[h] / frozen scale * w_norm) . (W_U[:, a] - W_U[:, i]) for RMSNorm."""
    model, info = tiny_llama
    model = _with_random_biases(model, seed=2)
    ds = make_dataset(model.tokenizer, "digits", n=2, seed=0)
    res = LL.dataset_dla(model, ds, progress=False)
    _, cache = model.run_with_cache(ds.tokens)
    w = model.ln_final.weight
    for b in range(2):
        d = model.W_U[:, ds.answer_ids[b]] - model.W_U[:, ds.incorrect_ids[b]]
        scale = cache["ln_final.hook_in"][b, -1].pow(2).mean().add(model.cfg.eps).sqrt()
        for l in range(info.n_layers):
            for h in range(info.n_heads):
                out = cache[f"blocks.{l}.attn.hook_z"][b, -1, h] @ model.W_O[l, h]
                ref = (out / scale * w) @ d
                assert res.values[res.labels.index(f"L{l}.H{h}"), b].item() == pytest.approx(ref.item(), abs=1e-4)


def test_dla_layers_match_transformer_lens_compat_mode(tiny_gpt2):
    """Per-layer attention/MLP DLA equals TransformerLens' DLA (which needs compatibility mode: folded
    LayerNorm, centred weights; centring does not change LayerNorm's output)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.tools.analysis import direct_logit_attribution as tl_dla

    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", n=3, seed=0)
    ours = LL.dataset_dla(model, ds, progress=False)
    hf, tok = _tiny_hf_model("tiny-gpt2")
    compat = TransformerBridge.boot_transformers("tiny-gpt2", hf_model=hf, tokenizer=tok, device="cpu")
    compat.enable_compatibility_mode()
    theirs = tl_dla(compat, ds.tokens, ds.answer_ids, ds.incorrect_ids, unit="component")
    for l in range(info.n_layers):
        attn = sum(ours.values[ours.labels.index(f"L{l}.H{h}")] for h in range(info.n_heads))
        attn = attn + ours.values[ours.labels.index(f"L{l}.attn_bias")]
        torch.testing.assert_close(
            theirs.attribution[theirs.labels.index(f"{l}_attn_out")].cpu(), attn, atol=1e-4, rtol=1e-3
        )
        torch.testing.assert_close(
            theirs.attribution[theirs.labels.index(f"{l}_mlp_out")].cpu(),
            ours.values[ours.labels.index(f"MLP{l}")],
            atol=1e-4,
            rtol=1e-3,
        )


def test_smollm_logit_lens_and_dla(smollm):
    """The embedded model: lens output = the model's prediction; DLA parts sum to its logit difference."""
    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=2, seed=0)
    res = LL.dataset_logit_lens(model, ds, progress=False)
    logits = model(ds.tokens)[:, -1]
    assert torch.equal(res.top1[-1, :, -1], logits.argmax(-1))
    assert (res.first_top1_layer() >= -2).all()
    dla = LL.dataset_dla(model, ds, progress=False)
    rows = torch.arange(2)
    ld = (logits[rows, ds.answer_ids] - logits[rows, ds.incorrect_ids]).detach()
    torch.testing.assert_close(dla.values.sum(0), ld, atol=1e-3, rtol=1e-4)
    assert len(dla.labels) == 1 + info.n_layers * (info.n_heads + 2) + 1
