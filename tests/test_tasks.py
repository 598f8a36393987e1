import random

import pytest

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.tasks.datasets import (
    CORRUPTIONS,
    FAMILIES,
    PREFIX_MODES,
    TaskDataset,
    TokenizationError,
    answer_token,
    corrupt_indices,
    is_chat_marker,
    is_valid_sequence,
    make_dataset,
    resolve_prefix,
    single_token_id,
    single_token_members,
    single_token_words,
)

SEQUENCE_CASES = [
    ("digits", "pure"),
    ("digits", "comma"),
    ("digits", "among_words"),
    ("digits", "mixed"),
    ("number_words", "pure"),
    ("number_words", "comma"),
    ("months", "among_words"),
    ("days", "comma"),
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
    # the default prefix is GPT-2's document separator, included in the positions
    assert ds.tokens[0, 0].item() == model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
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
        elif kind == "permutationKeepLast":
            assert sorted(bad) == sorted(clean) and bad[-1] == clean[-1] and bad != clean
            assert not is_valid_sequence(bad, 3)
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
    assert {
        "text",
        "tokens",
        "answer_id",
        "incorrect_id",
        "member_positions",
        "final_position",
        "corrupted_text",
        "corrupted_tokens",
    } <= set(data["prompts"][0])
    from seqcirc_utils.tasks.datasets import TaskDataset

    assert TaskDataset.from_json(data).to_json() == data


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"task": "bogus"}, "valid: digits, number_words"),
        ({"task": "digits", "template": "bogus"}, "valid: pure, comma, among_words, mixed"),
        ({"task": "digits", "corruption": "bogus"}, "valid: randAll, switchLastTwo"),
        ({"task": "digits", "direction": "sideways"}, "valid: increasing, decreasing"),
        ({"task": "digits", "n": 0}, "n must be a positive"),
        ({"task": "digits", "n": -3}, "n must be a positive"),
    ],
)
def test_bad_input_errors(tiny_gpt2, kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        make_dataset(tiny_gpt2[0].tokenizer, **kwargs)


def test_multi_token_answer_rejected_with_pieces(tiny_gpt2):
    with pytest.raises(TokenizationError, match=r"pieces \["):
        answer_token(tiny_gpt2[0].tokenizer, "1 2 3", "Xylophonistically")


def test_impossible_sequence_names_single_token_members(smollm):
    # SmolLM2 has single-token digits 0..9 only: a length-12 digit sequence cannot be built.
    with pytest.raises(ParameterError, match="single-token members"):
        make_dataset(smollm[0].tokenizer, "digits", length=12, n=4)


# --------------------------------------------------------------------------- prompt prefix


def _word_level_tokenizer(specials: dict[str, str]):
    """A small real fast tokenizer (word level) with the given special tokens, e.g. {"bos_token": "<s>"}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", *specials.values(), "1", "2", "3", "4", "5", "6", "the"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **specials)


def test_prefix_gpt2_shared_tokenizer():
    from seqcirc_utils.models.loading import gpt2_tokenizer

    tok = gpt2_tokenizer()  # the GPT-2 tokenizer files shipped in seqcirc_utils/data
    eot = tok.encode("<|endoftext|>")
    assert len(eot) == 1
    assert resolve_prefix(tok, "document").to_json() == {
        "mode": "document",
        "token_id": eot[0],
        "token": "<|endoftext|>",
    }
    assert resolve_prefix(tok, "bos").token_id == tok.bos_token_id == eot[0]  # GPT-2: bos = the separator
    assert resolve_prefix(tok, "none").ids == []


def test_prefix_tiny_llama(tiny_llama):
    """tiny-llama has GPT-2's vocabulary: its document separator is <|endoftext|>, and prompts start with it."""
    model, _ = tiny_llama
    tok = model.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    for mode, first in (("document", eot), ("bos", tok.bos_token_id)):
        ds = make_dataset(tok, "digits", n=4, seed=0, prefix=mode)
        assert (ds.tokens[:, 0] == first).all() and (ds.corrupted_tokens[:, 0] == first).all()
        assert ds.to_json()["prefix"]["token_id"] == first
    none = make_dataset(tok, "digits", n=4, seed=0, prefix="none")
    doc = make_dataset(tok, "digits", n=4, seed=0)
    assert none.seq_len == doc.seq_len - 1 and (none.tokens == doc.tokens[:, 1:]).all()
    assert [p.member_positions for p in none.prompts] == [[i - 1 for i in p.member_positions] for p in doc.prompts]
    assert none.to_json()["prefix"] == {"mode": "none", "token_id": None, "token": None}


def test_prefix_llama_style_and_chat_only_tokenizers():
    """Llama-style: the separator is a non-chat bos_token. Chat markers are never the document prefix."""
    llama = _word_level_tokenizer({"bos_token": "<s>", "eos_token": "</s>"})
    doc = resolve_prefix(llama, "document")
    assert (doc.token, doc.token_id) == ("<s>", llama.convert_tokens_to_ids("<s>"))
    chat = _word_level_tokenizer({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    assert resolve_prefix(chat, "bos").token == "<|im_start|>"  # "bos" takes it whatever it is
    with pytest.raises(ParameterError, match="valid: bos, none"):
        resolve_prefix(chat, "document")
    # A chat bos with <|endoftext|> in the vocabulary (SmolLM2-Instruct's layout): the separator wins.
    smol_like = _word_level_tokenizer(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    )
    assert resolve_prefix(smol_like, "document").token == "<|endoftext|>"
    assert all(is_chat_marker(t) for t in ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "<start_of_turn>", "[INST]"))
    assert not any(is_chat_marker(t) for t in ("<s>", "</s>", "<|endoftext|>", "<|begin_of_text|>", None))


@pytest.mark.embedded
def test_prefix_embedded_tokenizer():
    """SmolLM2-Instruct's bos_token is the chat marker <|im_start|>; the default prefix is <|endoftext|>."""
    from seqcirc_utils.models.loading import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    doc, bos = resolve_prefix(tok, "document"), resolve_prefix(tok, "bos")
    assert doc.token == "<|endoftext|>" and tok.convert_ids_to_tokens(doc.token_id) == "<|endoftext|>"
    assert bos.token == tok.bos_token and bos.token_id == tok.bos_token_id and is_chat_marker(bos.token)
    assert doc.token_id != bos.token_id
    for mode in PREFIX_MODES:
        ds = make_dataset(tok, "digits", n=4, seed=0, prefix=mode)
        pre = resolve_prefix(tok, mode)
        if pre.token_id is None:
            assert ds.tokens[0, 0].item() not in (doc.token_id, bos.token_id)
        else:
            assert (ds.tokens[:, 0] == pre.token_id).all()
        _check_positions(tok, ds)


@pytest.mark.parametrize("mode", PREFIX_MODES)
def test_prefix_json_round_trip(tiny_gpt2, mode):
    for task in ("digits", "greater_than"):
        ds = make_dataset(tiny_gpt2[0].tokenizer, task, n=3, seed=0, model_name="tiny-gpt2", prefix=mode)
        data = ds.to_json()
        assert data["prefix"]["mode"] == mode and data["prepend_bos"] == (mode != "none")
        back = TaskDataset.from_json(data)
        assert back.to_json() == data and back.spec.prefix == mode
        assert back.subset([0, 1]).to_json()["prefix"] == data["prefix"]


def test_old_json_without_prefix_loads(tiny_gpt2):
    data = make_dataset(tiny_gpt2[0].tokenizer, "digits", n=2, seed=0).to_json()
    old = {k: v for k, v in data.items() if k != "prefix"}
    back = TaskDataset.from_json(old)
    assert back.prefix_info.mode == "bos" and back.prefix_info.token_id == data["prompts"][0]["tokens"][0]
    old_none = {**old, "prepend_bos": False}
    assert TaskDataset.from_json(old_none).spec.prefix == "none"


def test_bad_prefix_names_valid_modes(tiny_gpt2):
    with pytest.raises(ParameterError, match="unknown prefix 'chat'; valid: document, bos, none"):
        make_dataset(tiny_gpt2[0].tokenizer, "digits", prefix="chat")
    with pytest.raises(ParameterError, match="valid: document, bos, none"):
        resolve_prefix(tiny_gpt2[0].tokenizer, "BOS")


def test_spaced_prompts_use_the_prefix(tiny_gpt2):
    """The irregularly spaced prompts of notebook 06 start with the same prefix as the datasets."""
    from seqcirc_utils.mechanisms.induction import spaced_prompts

    tok = tiny_gpt2[0].tokenizer
    doc = spaced_prompts(tok, "digits", 4, seed=0)
    none = spaced_prompts(tok, "digits", 4, seed=0, prefix="none")
    eot = resolve_prefix(tok, "document").token_id
    assert all(t[0] == eot for t in doc.tokens) and all(a[1:] == b for a, b in zip(doc.tokens, none.tokens))
    assert all([p - 1 for p in a] == b for a, b in zip(doc.member_positions, none.member_positions))
    with pytest.raises(ParameterError, match="valid: document, bos, none"):
        spaced_prompts(tok, "digits", 2, prefix="chat")


def _gpt2_tokenizer():
    from seqcirc_utils.models.loading import gpt2_tokenizer

    return gpt2_tokenizer()


def test_single_token_id_matches_plain_encoding_gpt2():
    """GPT-2 merges the space into the word: the in-context token is encode(" word") when that is one token."""
    tok = _gpt2_tokenizer()
    for word in ["March", "5", "seven", "Saturday", "cat", "antidisestablishmentarianism"]:
        spaced = tok.encode(" " + word)
        bare = tok.encode(word)
        assert single_token_id(tok, word) == (spaced[0] if len(spaced) == 1 else None)
        assert single_token_id(tok, word, split_space=False) == (spaced[0] if len(spaced) == 1 else None)
        assert single_token_id(tok, word, after_space=False) == (bare[0] if len(bare) == 1 else None)


@pytest.mark.embedded
def test_single_token_id_split_space_embedded_tokenizer():
    """SmolLM2 spells " 5" as " " + "5": accepted (returning "5") only with split_space=True."""
    from seqcirc_utils.models.loading import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    five = tok("x 5", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in five[1:]] == [" ", "5"]
    assert single_token_id(tok, "5") == five[-1]
    assert single_token_id(tok, "5", split_space=False) is None
    march = tok(" March", add_special_tokens=False)["input_ids"]
    assert len(march) == 1 and single_token_id(tok, "March", split_space=False) == march[0]
    # the family check is the single-token check at a text's start and after a space
    digits = single_token_members(tok, "digits")
    assert digits and all(single_token_id(tok, FAMILIES["digits"][i]) is not None for i in digits)
    brute = [
        i
        for i, m in enumerate(FAMILIES["digits"])
        if len(tok(m, add_special_tokens=False)["input_ids"]) == 1
        and tok.decode([tok("x " + m, add_special_tokens=False)["input_ids"][-1]]) == m
        and len(tok("x " + m, add_special_tokens=False)["input_ids"]) in (2, 3)
    ]
    assert digits == brute


def test_single_token_words_excludes_and_requires_merged_space():
    tok = _gpt2_tokenizer()
    words = ["cat", "dog", "antidisestablishmentarianism", "March"]
    assert single_token_words(tok, words) == ["cat", "dog", "March"]
    assert single_token_words(tok, words, exclude=["March"]) == ["cat", "dog"]
