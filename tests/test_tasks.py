import random

import pytest

from seqcirc_utils.tasks import (
    CORRUPTIONS, FAMILIES, TokenizationError, answer_token, corrupt_indices, is_valid_sequence, make_dataset,
)

SEQUENCE_CASES = [
    ("digits", "pure"), ("digits", "comma"), ("digits", "among_words"), ("digits", "mixed"),
    ("number_words", "pure"), ("number_words", "comma"), ("months", "among_words"), ("days", "comma"),
    ("letters", "pure"),
]


def _check_positions(tok, ds):
    for p in ds.prompts:
        assert p.final_position == len(p.tokens) - 1
        for pos, member in zip(p.member_positions, p.members):
            assert tok.decode([p.tokens[pos]]).strip() == member
        for pos, member in zip(p.member_positions, p.corrupted_members):
            assert tok.decode([p.corrupted_tokens[pos]]).strip() == member
        assert len(p.corrupted_tokens) == len(p.tokens)
        assert tok.decode([p.answer_id]).strip() == p.answer
        assert tok.decode([p.incorrect_id]).strip() == p.members[-1]


@pytest.mark.parametrize("task,template", SEQUENCE_CASES)
def test_positions_gpt2_tokenizer(tiny_gpt2, task, template):
    model, _ = tiny_gpt2
    ds = make_dataset(model.tokenizer, task, template=template, n=16, seed=1)
    _check_positions(model.tokenizer, ds)
    assert ds.tokens[0, 0].item() == model.tokenizer.bos_token_id  # BOS included in positions
    assert ds.answer_token_policy == "single-token"


@pytest.mark.parametrize("task,template", SEQUENCE_CASES)
def test_positions_embedded_tokenizer(smollm, task, template):
    model, _ = smollm
    ds = make_dataset(model.tokenizer, task, template=template, n=16, seed=1)
    _check_positions(model.tokenizer, ds)
    if task == "digits":  # SmolLM2 spells " 5" as " " + "5": the prompt ends with the space token
        assert ds.answer_token_policy.startswith("space-split")
        assert model.tokenizer.decode([ds.prompts[0].tokens[-1]]) == " "


def test_decreasing_and_step(tiny_gpt2):
    tok = tiny_gpt2[0].tokenizer
    ds = make_dataset(tok, "digits", direction="decreasing", step=2, length=3, n=8, seed=0)
    for p in ds.prompts:
        values = [int(m) for m in p.members] + [int(p.answer)]
        assert all(b - a == -2 for a, b in zip(values, values[1:]))


def test_greater_than_two_digit_and_digit_tokenizers(tiny_gpt2, smollm):
    gpt2 = make_dataset(tiny_gpt2[0].tokenizer, "greater_than", n=16, seed=0)
    assert gpt2.answer_token_policy == "greater-than two_digit" and len(gpt2.greater_than_groups) == 100
    smol = make_dataset(smollm[0].tokenizer, "greater_than", n=16, seed=0)
    assert smol.answer_token_policy == "greater-than digit" and len(smol.greater_than_groups) == 10
    for ds, tok in ((gpt2, tiny_gpt2[0].tokenizer), (smol, smollm[0].tokenizer)):
        for p in ds.prompts:
            assert str(p.year) in p.text and p.corrupted_text.count(str(p.year)[:2] + "01") == 1
            year_text = "".join(tok.decode([p.tokens[i]]) for i in p.member_positions).strip()
            assert year_text == str(p.year)[2:]
            assert "".join(tok.decode([p.corrupted_tokens[i]]) for i in p.member_positions).strip() == "01"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions_change_what_they_claim(tiny_gpt2, kind):
    tok = tiny_gpt2[0].tokenizer
    ds = make_dataset(tok, "digits", template="comma", corruption=kind, n=24, seed=3, length=4)
    for p in ds.prompts:
        clean = [int(m) for m in p.members]
        bad = [int(m) for m in p.corrupted_members]
        assert len(p.corrupted_tokens) == len(p.tokens)
        if kind == "randAll":
            assert not is_valid_sequence(bad, max_step=3) and bad != clean
        elif kind == "switchLastTwo":
            assert bad == clean[:-2] + [clean[-1], clean[-2]]
        elif kind == "repeatLastTwo":
            assert bad[:-1] == clean[:-1] and bad[-1] == bad[-2]
        elif kind == "repeatFirstAll":
            assert bad == [clean[0]] * len(clean)
        elif kind == "repeatRand":
            assert len(set(bad)) == 1
        elif kind == "permutation":
            assert sorted(bad) == sorted(clean) and bad != clean and not is_valid_sequence(bad, 3)
        # the corrupted text is rendered from the corrupted members (no string replace)
        assert p.corrupted_text.replace(",", "").split() == [str(b) for b in bad]


def test_randall_never_valid_even_when_forced():
    rng = random.Random(0)
    for _ in range(2000):
        out = corrupt_indices("randAll", [1, 2, 3, 4], range(1, 13), rng, max_step=3)
        assert not is_valid_sequence(out, 3)


def test_same_parameters_same_dataset(tiny_gpt2):
    tok = tiny_gpt2[0].tokenizer
    a = make_dataset(tok, "months", template="among_words", n=20, seed=7)
    b = make_dataset(tok, "months", template="among_words", n=20, seed=7)
    c = make_dataset(tok, "months", template="among_words", n=20, seed=8)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


def test_json_keys(tiny_gpt2):
    ds = make_dataset(tiny_gpt2[0].tokenizer, "digits", n=2, seed=0, model_name="tiny-gpt2")
    data = ds.to_json()
    assert {"model", "task", "template", "seed", "prompts"} <= set(data)
    assert {"text", "tokens", "answer_id", "incorrect_id", "member_positions", "final_position",
            "corrupted_text", "corrupted_tokens"} <= set(data["prompts"][0])
    from seqcirc_utils.tasks import TaskDataset

    assert TaskDataset.from_json(data).to_json() == data


@pytest.mark.parametrize("kwargs,fragment", [
    ({"task": "bogus"}, "valid: digits, number_words"),
    ({"task": "digits", "template": "bogus"}, "valid: pure, comma, among_words, mixed"),
    ({"task": "digits", "corruption": "bogus"}, "valid: randAll, switchLastTwo"),
    ({"task": "digits", "direction": "sideways"}, "valid: increasing, decreasing"),
    ({"task": "digits", "n": 0}, "n must be a positive"),
    ({"task": "digits", "n": -3}, "n must be a positive"),
])
def test_bad_input_errors(tiny_gpt2, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_dataset(tiny_gpt2[0].tokenizer, **kwargs)


def test_multi_token_answer_rejected_with_pieces(tiny_gpt2):
    with pytest.raises(TokenizationError, match=r"pieces \["):
        answer_token(tiny_gpt2[0].tokenizer, "1 2 3", "Xylophonistically")


def test_impossible_sequence_names_single_token_members(smollm):
    # SmolLM2 has single-token digits 0..9 only: a length-12 digit sequence cannot be built.
    with pytest.raises(ValueError, match="single-token members"):
        make_dataset(smollm[0].tokenizer, "digits", length=12, n=4)
