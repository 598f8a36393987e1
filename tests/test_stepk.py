"""Step-k sequences (issue 10 §6): the add-k OV score against the member table, and the embedded model's behaviour."""

import pytest
import torch

from seqcirc_utils.core.types import head
from seqcirc_utils.mechanisms import ov_scores as O
from seqcirc_utils.tasks.datasets import FAMILIES, make_dataset


@pytest.mark.parametrize("k", [2, 3])
def test_add_k_score_counts_member_table_argmaxes(tiny_llama, k):
    """ov_scores' add<k> (top-1 over the family) = share of members whose OV row peaks at the member k ahead,
    counted by brute force from each head's member x member table."""
    model, info = tiny_llama
    family = "months"
    scores = O.ov_scores(model, family, kinds=[f"add{k}", "next"], top_k=1, over="family", progress=False)
    fam = O.family_tokens(model.tokenizer, family)
    for layer, h in [(0, 0), (1, 2), (info.n_layers - 1, info.n_heads - 1)]:
        table = O.ov_member_table(model, head(layer, h), family)
        hits = n = 0
        for row, name in enumerate(fam.names):
            target = FAMILIES[family].index(name) + k
            if target >= len(FAMILIES[family]) or FAMILIES[family][target] not in fam.names:
                continue
            n += 1
            hits += table.columns[int(torch.as_tensor(table.values[row]).argmax())] == FAMILIES[family][target]
        got = scores.set_index("component").loc[str(head(layer, h))]
        assert got[f"n_add{k}"] == n and got[f"add{k}"] == pytest.approx(hits / n)


def test_step_k_prompts_are_arithmetic_progressions(tiny_gpt2):
    model, _ = tiny_gpt2
    ds = make_dataset(model.tokenizer, "digits", template="comma", step=3, length=3, n=6, seed=0)
    for p in ds.prompts:
        values = [int(m) for m in p.members] + [int(p.answer)]
        assert [b - a for a, b in zip(values, values[1:])] == [3, 3, 3]


def test_smollm_continues_step_two_digits(smollm):
    """SmolLM2 continues `1, 3, 5,` with 7 (every step-2 digit prompt), and number words less well as the step grows."""
    from seqcirc_utils.tasks.behaviour import evaluate

    model, _ = smollm
    acc = {}
    for fam, k in (("digits", 2), ("number_words", 1), ("number_words", 3)):
        ds = make_dataset(
            model.tokenizer, fam, model_name="smollm2-135m", template="comma", step=k, length=3, n=16, seed=0
        )
        acc[(fam, k)] = evaluate(model, ds)["top1_accuracy"]
    assert acc[("digits", 2)] >= 0.75
    assert acc[("number_words", 3)] < acc[("number_words", 1)]
