"""Attention summaries: values equal a direct read of hook_pattern, padding is harmless, and
planted patterns show up in the right columns."""

import pytest
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head
from seqcirc_utils.mechanisms import attention as A
from seqcirc_utils.mechanisms.induction import spaced_prompts
from seqcirc_utils.tasks.datasets import make_dataset


@pytest.fixture(scope="module")
def digits(tiny_gpt2):
    model, _ = tiny_gpt2
    return make_dataset(model.tokenizer, "digits", template="among_words", n=6, seed=0)


def test_member_attention_matches_cache(tiny_gpt2, digits):
    model, info = tiny_gpt2
    att = A.dataset_member_attention(model, digits, batch_size=4, progress=False)
    _, cache = model.run_with_cache(digits.tokens)
    for b, p in enumerate(digits.prompts):
        for l in range(info.n_layers):
            pat = cache[f"blocks.{l}.attn.hook_pattern"][b]  # [H, q, k]
            torch.testing.assert_close(att.final_to_member[l, :, b], pat[:, p.final_position, p.member_positions])
            torch.testing.assert_close(att.final_to_bos[l, :, b], pat[:, p.final_position, 0])
            i, j = p.member_positions[2], p.member_positions[1]
            torch.testing.assert_close(att.member_to_member[l, :, b, 2, 1], pat[:, i, j])
    df = A.attention_summary(att).set_index("component")
    assert len(df) == info.n_layers * info.n_heads and "L1.H3" in df.index
    ref = torch.stack(
        [
            cache["blocks.1.attn.hook_pattern"][b, 3, p.final_position, p.member_positions[-1]]
            for b, p in enumerate(digits.prompts)
        ]
    ).mean()
    assert df.loc["L1.H3", "final_to_last_member"] == pytest.approx(float(ref), abs=1e-6)


def test_right_padding_does_not_change_attention(tiny_llama):
    model, _ = tiny_llama
    prompts = spaced_prompts(model.tokenizer, "days", 4, n_members=(2, 5), gap=(0, 3), seed=2)
    assert len({len(t) for t in prompts.tokens}) > 1
    batched = A.member_attention(model, prompts.tokens, prompts.member_positions, batch_size=4, progress=False)
    for b in range(len(prompts)):
        alone = A.member_attention(model, [prompts.tokens[b]], [prompts.member_positions[b]], progress=False)
        n = len(prompts.member_positions[b])
        torch.testing.assert_close(
            batched.final_to_member[:, :, b, -n:], alone.final_to_member[:, :, 0, -n:], atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            batched.member_to_member[:, :, b, -n:, -n:], alone.member_to_member[:, :, 0, -n:, -n:], atol=1e-5, rtol=1e-4
        )
    assert batched.member_mask.sum(1).tolist() == [len(p) for p in prompts.member_positions]


def test_planted_previous_member_and_last_member_head(tiny_gpt2, digits):
    """Head L0.H1 planted: each member attends to the previous member, the final position to the last member."""
    model, _ = tiny_gpt2
    pos = digits.prompts[0].member_positions
    final = digits.prompts[0].final_position

    def hook(pattern, hook):
        pattern = pattern.clone()
        new = torch.zeros_like(pattern[:, 1])
        new[:, :, 0] = 1.0
        for i in range(1, len(pos)):
            new[:, pos[i], 0] = 0.0
            new[:, pos[i], pos[i - 1]] = 1.0
        new[:, final, 0] = 0.0
        new[:, final, pos[-1]] = 1.0
        pattern[:, 1] = new
        return pattern

    att = A.dataset_member_attention(model, digits, fwd_hooks=[("blocks.0.attn.hook_pattern", hook)], progress=False)
    df = A.attention_summary(att).set_index("component")
    row = df.loc["L0.H1"]
    assert row["final_to_last_member"] == pytest.approx(1.0)
    assert row["member_to_prev_member"] == pytest.approx(1.0)
    assert row["member_to_same_type"] == pytest.approx(1.0)
    assert row["member_to_first_member"] == pytest.approx(0.0)  # scored from member 2 on: none reads member 0
    assert A.top_attention_heads(A.attention_summary(att), "member_to_prev_member", 1).loc[0, "component"] == "L0.H1"
    mat = A.member_to_member_matrix(att, head(0, 1))
    assert mat.iloc[2, 1] == pytest.approx(1.0) and mat.iloc[2, 0] == pytest.approx(0.0)
    table = A.final_to_member_table(att).set_index("component")
    assert table.loc["L0.H1", "m-1"] == pytest.approx(1.0)


def test_bad_column(tiny_gpt2, digits):
    model, _ = tiny_gpt2
    summary = A.attention_summary(A.dataset_member_attention(model, digits, progress=False))
    with pytest.raises(ParameterError, match="valid: final_to_last_member"):
        A.top_attention_heads(summary, "to_everything")
