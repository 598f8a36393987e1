"""Induction-offset scores: planted attention patterns are recovered; irregular spacing separates
member offsets from token offsets; values match a direct read of the attention cache."""

import pytest
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.mechanisms import induction as I
from seqcirc_utils.tasks.datasets import make_dataset

LAYER, HEAD = 1, 2


def _plant(fn):
    """A hook on blocks.1.attn.hook_pattern that overwrites head 2's pattern with ``fn(q_len, batch)``."""

    def hook(pattern, hook):
        pattern = pattern.clone()
        pattern[:, HEAD] = fn(pattern.shape[-1], pattern.shape[0]).to(pattern.dtype)
        return pattern

    return [(f"blocks.{LAYER}.attn.hook_pattern", hook)]


def _token_offset_pattern(k: int):
    def fn(n_pos: int, batch: int) -> torch.Tensor:
        pat = torch.zeros(n_pos, n_pos)
        q = torch.arange(n_pos)
        pat[q, torch.where(q >= k, q - k, q)] = 1.0  # too early: attend to itself
        return pat.expand(batch, n_pos, n_pos)

    return fn


def _member_offset_pattern(member_positions, k: int):
    def fn(n_pos: int, batch: int) -> torch.Tensor:
        pat = torch.zeros(batch, n_pos, n_pos)
        pat[:, :, 0] = 1.0  # everything else attends to BOS
        for b, pos in enumerate(member_positions):
            for i in range(k, len(pos)):
                pat[b, pos[i], 0] = 0.0
                pat[b, pos[i], pos[i - k]] = 1.0
        return pat

    return fn


@pytest.fixture(scope="module")
def spaced(tiny_gpt2):
    model, _ = tiny_gpt2
    return I.spaced_prompts(model.tokenizer, "digits", 12, n_members=(3, 6), gap=(0, 3), seed=0)


def test_spaced_prompts_are_irregular_and_well_formed(tiny_gpt2, smollm, spaced):
    model, _ = tiny_gpt2
    tok = model.tokenizer
    assert len({len(t) for t in spaced.tokens}) > 1  # irregular lengths
    assert len({g for gaps in spaced.gaps for g in gaps[1:]}) > 1  # irregular spacing
    for toks, pos, members in zip(spaced.tokens, spaced.member_positions, spaced.members):
        assert [tok.decode([toks[p]]).strip() for p in pos] == members
        assert [int(m) for m in members] == list(range(int(members[0]), int(members[0]) + len(members)))
    again = I.spaced_prompts(tok, "digits", 12, n_members=(3, 6), gap=(0, 3), seed=0)
    assert again.tokens == spaced.tokens  # seeded
    # SmolLM2: digits are bare tokens after a split-off space
    smol = I.spaced_prompts(smollm[0].tokenizer, "digits", 4, seed=1)
    for toks, pos, members in zip(smol.tokens, smol.member_positions, smol.members):
        assert [smollm[0].tokenizer.decode([toks[p]]) for p in pos] == members


def test_planted_token_offset_is_recovered(tiny_gpt2, spaced):
    model, _ = tiny_gpt2
    hooks = _plant(_token_offset_pattern(2))
    # pure digits in GPT-2: one token per member, so member and token offsets coincide
    ds = make_dataset(model.tokenizer, "digits", n=8, length=5, seed=0)
    reg = I.dataset_offset_scores(model, ds, fwd_hooks=hooks, max_offset=3, progress=False)
    assert reg.member[LAYER, HEAD].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert reg.token[LAYER, HEAD].tolist() == pytest.approx([0.0, 1.0, 0.0])
    # irregular spacing: the positional head keeps token offset 2, loses member offset 2
    irr = I.prompts_offset_scores(model, spaced, fwd_hooks=hooks, max_offset=3, progress=False)
    assert irr.token[LAYER, HEAD, 1] == pytest.approx(1.0)
    assert irr.member[LAYER, HEAD, 1] < 0.5
    df = irr.to_dataframe().set_index("component")
    assert df.loc[f"L{LAYER}.H{HEAD}", "token_k2"] == pytest.approx(1.0)


def test_planted_member_offset_is_recovered(tiny_gpt2, spaced):
    model, _ = tiny_gpt2
    hooks = _plant(_member_offset_pattern(spaced.member_positions, 1))
    irr = I.prompts_offset_scores(model, spaced, fwd_hooks=hooks, max_offset=3, batch_size=len(spaced), progress=False)
    assert irr.member[LAYER, HEAD].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert irr.token[LAYER, HEAD, 0] < 0.7  # members are often more than one token apart
    df = irr.to_dataframe().set_index("component")
    assert df.loc[f"L{LAYER}.H{HEAD}", "same_type_k1"] > 0.3
    # the planted head tops the member-offset-1 ranking
    assert df["member_k1"].idxmax() == f"L{LAYER}.H{HEAD}"


def test_offset_scores_match_direct_cache_read(tiny_llama):
    model, info = tiny_llama
    prompts = I.spaced_prompts(model.tokenizer, "months", 5, n_members=(3, 5), gap=(0, 2), seed=3)
    got = I.prompts_offset_scores(model, prompts, max_offset=2, batch_size=2, progress=False)
    m_vals, t_vals = {1: [], 2: []}, {1: [], 2: []}
    for toks, pos in zip(prompts.tokens, prompts.member_positions):
        _, cache = model.run_with_cache(torch.tensor([toks]))
        pat = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(info.n_layers)])
        for k in (1, 2):
            for i in range(len(pos)):
                if i >= k:
                    m_vals[k].append(pat[:, :, pos[i], pos[i - k]])
                if pos[i] - k >= 0:
                    t_vals[k].append(pat[:, :, pos[i], pos[i] - k])
    for k in (1, 2):
        torch.testing.assert_close(got.member[:, :, k - 1], torch.stack(m_vals[k]).mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.token[:, :, k - 1], torch.stack(t_vals[k]).mean(0), atol=1e-5, rtol=1e-4)


def test_bad_inputs(tiny_gpt2):
    model, _ = tiny_gpt2
    with pytest.raises(ParameterError, match="valid: digits"):
        I.spaced_prompts(model.tokenizer, "colours", 2)
    with pytest.raises(ParameterError, match="n_members"):
        I.spaced_prompts(model.tokenizer, "digits", 2, n_members=(1, 3))
    with pytest.raises(ParameterError, match="max_offset"):
        I.offset_scores(model, [[1, 2, 3]], [[1, 2]], max_offset=0)
