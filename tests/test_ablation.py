import pytest
import torch
from conftest import hook_registry, raw_head_mean_replaced_logits

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.scoring.ablation import Ablator, ablated, circuit_score, mean_ablate_heads, single_component_effects
from seqcirc_utils.tasks.datasets import make_dataset


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_mean_ablating_one_head_matches_raw_pytorch_hook(request, which):
    model, info = request.getfixturevalue(which)
    ds = make_dataset(model.tokenizer, "digits", n=12, seed=0)
    layer, h = info.n_layers - 1, 1
    ours = mean_ablate_heads(model, info, ds, [head(layer, h)])

    # Independent: the corrupted runs' per-position mean of the head's input to the output projection,
    # written into the clean run with a plain torch pre-hook.
    ref = raw_head_mean_replaced_logits(model, info, layer, h, ds.corrupted_tokens, ds.tokens)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert not torch.allclose(ours, model.original_model(ds.tokens).logits[:, -1].detach(), atol=1e-5)


def test_activation_patching_matches_transformer_lens(smollm):
    """Resample ablation of single heads against TransformerLens' own head patching, on the heads of the first,
    a middle and the last layer (TransformerLens' ``index_df`` selects them; every layer's heads would cost a
    forward pass each for the same check)."""
    import pandas as pd
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    from seqcirc_utils.core import metrics

    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0)
    # TransformerLens patches the cached run into the tokens' run: corrupted cache into clean tokens.
    _, corrupted_cache = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n.endswith("hook_z"))

    def metric(logits):
        return metrics.logit_diff(logits[:, -1], ds.answer_ids, ds.incorrect_ids).mean()

    layers = sorted({0, info.n_layers // 2, info.n_layers - 1})
    heads = [c for c in info.heads if c.layer in layers]
    index = pd.DataFrame({"layer": [c.layer for c in heads], "head": [c.index for c in heads]})
    tl = get_act_patch_attn_head_out_all_pos(
        model, ds.tokens, corrupted_cache, metric, index_axis_names=None, index_df=index
    )
    ours = single_component_effects(model, info, ds, heads, mode="resample", progress=False)
    assert tl.shape == (len(heads),) and len(heads) == len(layers) * info.n_heads
    assert torch.allclose(torch.tensor(ours["metric"].values, dtype=torch.float32), tl.flatten().float(), atol=2e-3)


def test_keep_all_is_one_and_ablate_all_matches_direct(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=10, seed=2)
    assert circuit_score(model, info, ds, circuit=info.components).score == pytest.approx(1.0)
    empty = circuit_score(model, info, ds, circuit=[])
    # Direct: replace every hook_z and hook_mlp_out by its corrupted per-position mean.
    names = [f"blocks.{l}.attn.hook_z" for l in range(info.n_layers)] + [
        f"blocks.{l}.hook_mlp_out" for l in range(info.n_layers)
    ]
    _, cache = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n in names)
    hooks = [(n, (lambda m: lambda act, hook: m.expand_as(act).clone())(cache[n].mean(0))) for n in names]
    with torch.no_grad():
        full = model(ds.tokens)[:, -1]
        with model.hooks(fwd_hooks=hooks):
            direct = model(ds.tokens)[:, -1]
    from seqcirc_utils.core.metrics import mean_logit_diff

    expected = mean_logit_diff(direct, ds.answer_ids, ds.incorrect_ids) / mean_logit_diff(
        full, ds.answer_ids, ds.incorrect_ids
    )
    assert empty.score == pytest.approx(expected, rel=1e-4)


def test_resumed_pass_equals_full_pass(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    ab = Ablator(model, info, ds)
    ablate = [head(0, 1), head(1, 2), mlp(1)]
    _, resid = ab.residuals([head(0, 1)])
    resumed, _ = ab.logits_from_layer(1, resid[1], ablate)
    assert torch.allclose(resumed, ab.logits(ablate), atol=1e-5)


def test_position_selective_ablation(tiny_gpt2):
    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    everywhere = mean_ablate_heads(model, info, ds, [head(0, 0)])
    at_first = mean_ablate_heads(model, info, ds, [head(0, 0)], positions=[0])
    # BOS is identical in clean and corrupted prompts, so ablating only there changes nothing
    with torch.no_grad():
        clean = model(ds.tokens)[:, -1]
    assert torch.allclose(at_first, clean, atol=1e-5)
    assert not torch.allclose(everywhere, clean, atol=1e-5)


def test_hooks_removed_even_on_error(tiny_gpt2):
    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0)
    before = hook_registry(model)
    with pytest.raises(RuntimeError, match="boom"):
        with ablated(model, info, ds, [head(0, 0), mlp(1)]):
            assert hook_registry(model) > before
            raise RuntimeError("boom")
    assert hook_registry(model) == before
    circuit_score(model, info, ds, heads=[(0, 0)], mlps=[1])
    assert hook_registry(model) == before


def test_bad_component_and_mode(tiny_gpt2):
    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0)
    with pytest.raises(ParameterError, match="layer out of range"):
        mean_ablate_heads(model, info, ds, [head(info.n_layers, 0)])
    with pytest.raises(ParameterError, match="valid: mean, zero, resample"):
        circuit_score(model, info, ds, circuit=[], mode="median")


def test_single_component_effects_reuse_clean_residuals(tiny_llama):
    """A second call on the same dataset reuses the cached clean residual stream (no extra clean pass)."""
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=6, seed=5)
    from seqcirc_utils.scoring.ablation import AblatorCache

    ablators = AblatorCache()
    first = single_component_effects(model, info, ds, info.heads, progress=False, ablators=ablators)
    ab = ablators.get(model, info, ds)
    assert len(ablators) == 1  # the call above built it
    passes = ab.forward_passes
    second = single_component_effects(model, info, ds, info.heads, progress=False, ablators=ablators)
    assert ab.forward_passes - passes == len(info.heads)  # one resumed pass per head, nothing else
    assert first["drop_points"].tolist() == second["drop_points"].tolist()
    # Resumed passes agree with full passes that rerun every block.
    for c, drop in zip(info.heads, first["drop_points"]):
        assert drop == pytest.approx(100 * (1 - ab.score_ablated([c])), abs=1e-3)


def test_ablator_cache_is_owned_by_its_caller(tiny_llama):
    """An AblatorCache returns one Ablator per (dataset, mode, metric, positions), evicts the oldest past
    max_size, and two caches share nothing (there is no module-level cache)."""
    from seqcirc_utils.scoring import ablation
    from seqcirc_utils.scoring.ablation import AblatorCache

    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=1)
    other = make_dataset(model.tokenizer, "digits", n=4, seed=2)
    cache = AblatorCache(max_size=2)
    ab = cache.get(model, info, ds)
    assert cache.get(model, info, ds, "mean", "logit_diff") is ab and len(cache) == 1
    assert cache.get(model, info, ds, "mean", "kl") is not ab  # another metric: another Ablator
    assert cache.get(model, info, other) is not ab and len(cache) == 2  # the first entry is evicted
    assert cache.get(model, info, ds) is not ab
    assert AblatorCache().get(model, info, ds) is not cache.get(model, info, ds)
    assert not any(
        isinstance(v, dict) and v and all(isinstance(a, Ablator) for a in v.values()) for v in vars(ablation).values()
    )
    # Without a cache each call builds its own Ablator; the scores are the same.
    assert circuit_score(model, info, ds, circuit=[]).score == pytest.approx(ab.score(set()).score)
