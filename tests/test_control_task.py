"""The control task ``induction_copy`` (issue 18, 02 / 03): random-token induction copying ``K L M K L`` -> ``M``
with single-token words of the tokenizer, sequence-disjoint splits, one-line errors, and the embedded model's
behaviour on it."""

from __future__ import annotations

import re

import pytest

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.options import FAMILIES, INDUCTION_COPY, TASKS
from seqcirc_utils.tasks import datasets as D
from seqcirc_utils.tasks.datasets import (
    INDUCTION_SEQUENCES,
    Split,
    TaskDataset,
    induction_shape,
    induction_words,
    make_dataset,
    make_split_datasets,
    partition,
    sequence_overlap,
    sequence_space,
)


def _smollm_tokenizer():
    from seqcirc_utils.models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


def _gpt2_tokenizer():
    from seqcirc_utils.models.loading import gpt2_tokenizer

    return gpt2_tokenizer()


TOKENIZERS = [
    pytest.param(_gpt2_tokenizer, id="gpt2"),
    pytest.param(_smollm_tokenizer, id="smollm2", marks=pytest.mark.embedded),
]
TEMPLATES = ("pure", "comma", "among_words")


def _fillers(text: str) -> list[str]:
    """The among_words filler words of a text, in order (the word before each 'done in', and the last one)."""
    return re.findall(r"(\w+) done in", text)


def _check(tok, ds: TaskDataset, length: int) -> None:
    """Every prompt read back from its tokens: the shown words, the pattern, single-token answer and incorrect."""
    distinct, repeated = induction_shape(length)
    for p in ds.prompts:
        assert len(p.members) == length == len(p.member_positions)
        shown = [tok.decode([p.tokens[i]]).strip() for i in p.member_positions]
        assert shown == p.members
        head = p.members[:distinct]
        assert len(set(head)) == distinct  # K, L, M distinct
        assert p.members[distinct:] == head[:repeated]  # then the first ones again
        assert p.answer == head[repeated] and p.incorrect == p.members[-1] != p.answer
        assert tok.decode([p.answer_id]).strip() == p.answer and tok.decode([p.incorrect_id]).strip() == p.incorrect
        bad = [tok.decode([p.corrupted_tokens[i]]).strip() for i in p.member_positions]
        assert bad == p.corrupted_members and len(set(bad)) == length  # nothing repeats: nothing to copy
        assert len(p.corrupted_tokens) == len(p.tokens) and p.final_position == len(p.tokens) - 1
        assert p.sequence_id == " ".join(p.members)
        if ds.spec.template == "among_words":  # the fillers repeat with their words; the twin repeats nothing
            fillers, bad_fillers = _fillers(p.text), _fillers(p.corrupted_text)
            assert fillers[distinct:] == fillers[: repeated + 1] and len(set(fillers)) == distinct
            assert len(set(bad_fillers)) == len(bad_fillers) == length + 1


def test_registered_task_and_shape():
    assert INDUCTION_COPY in TASKS and INDUCTION_COPY not in FAMILIES
    assert [induction_shape(n) for n in (3, 4, 5, 6)] == [(2, 1), (3, 1), (3, 2), (4, 2)]


@pytest.mark.parametrize("load_tokenizer", TOKENIZERS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_prompts_are_induction_with_single_token_words(load_tokenizer, template):
    tok = load_tokenizer()
    for length in (5, 4):
        ds = make_dataset(tok, INDUCTION_COPY, template=template, length=length, n=24, seed=2)
        _check(tok, ds, length)
        assert ds.tokens[0, 0].item() == tok.convert_tokens_to_ids("<|endoftext|>")
    ds = make_dataset(tok, INDUCTION_COPY, template=template, length=5, n=24, seed=2)
    assert ds.to_json() == make_dataset(tok, INDUCTION_COPY, template=template, length=5, n=24, seed=2).to_json()
    assert TaskDataset.from_json(ds.to_json()).to_json() == ds.to_json()


@pytest.mark.parametrize("load_tokenizer", TOKENIZERS)
def test_words_come_from_the_tokenizer(load_tokenizer):
    tok = load_tokenizer()
    words = induction_words(tok)
    assert len(words) == D.INDUCTION_POOL == len(set(words)) and words == induction_words(tok)
    family = {m.lower() for f in FAMILIES.values() for m in f}
    for w in words:
        assert w.isalpha() and w.islower() and w not in family
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("load_tokenizer", TOKENIZERS)
def test_splits_are_sequence_disjoint(load_tokenizer):
    tok = load_tokenizer()
    space = sequence_space(tok, INDUCTION_COPY, length=5)
    assert space == list(range(INDUCTION_SEQUENCES))
    parts = partition(space, Split("discovery"), "sequences")
    sizes = {role: {"n": len(part), "sequences": len(part)} for role, part in parts.items()}
    ds = make_split_datasets(tok, INDUCTION_COPY, template="among_words", length=5, sizes=sizes)
    disc, held = ds["discovery"], ds["heldout"]
    assert sequence_overlap(disc, held) == 0
    assert not {tuple(p.members) for p in disc.prompts} & {tuple(p.members) for p in held.prompts}
    assert disc.n_sequences + held.n_sequences == INDUCTION_SEQUENCES  # every identity of each part, once
    _check(tok, disc, 5)
    # the discovery pipeline's sizes: n prompts cycling over fewer sequences
    small = make_split_datasets(tok, INDUCTION_COPY, length=5, n=16, sizes={"heldout": {"n": 12, "sequences": 6}})
    assert small["heldout"].n_sequences == 6 and sequence_overlap(small["discovery"], small["heldout"]) == 0


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"direction": "decreasing"}, "no direction or step"),
        ({"step": 2}, "no direction or step"),
        ({"corruption": "permutation"}, "one corruption"),
        ({"length": 2}, "length"),
        ({"template": "mixed"}, "mixed template"),
    ],
)
def test_bad_options_are_one_line(options, fragment):
    with pytest.raises(ParameterError, match=fragment) as err:
        make_dataset(_gpt2_tokenizer(), INDUCTION_COPY, **options)
    assert "\n" not in str(err.value)


def test_too_few_words_is_one_line(monkeypatch):
    monkeypatch.setattr(D, "_lowercase_vocabulary_words", lambda tok: ["apple", "river"])
    monkeypatch.setattr(D, "_induction_words", {})  # nothing cached
    with pytest.raises(TokenizationError, match="only 2 lowercase vocabulary words") as err:
        make_dataset(_gpt2_tokenizer(), INDUCTION_COPY)
    assert "\n" not in str(err.value)


#: Conservative floors on the embedded model's top-1 accuracy (length 5, 64 prompts, seed 0; measured when written:
#: among_words 0.94, comma 0.80, pure 0.53). Among_words is the template chapter 02 uses.
ACCURACY_FLOOR = {"among_words": 0.8, "comma": 0.6, "pure": 0.35}


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_model_copies(smollm):
    """SmolLM2 continues the repeated pattern on most among_words prompts: top-1 accuracy per template against a
    conservative floor, the paper's filter (top-1 and p(correct) > 2 p(incorrect)) keeps most of them, and the
    corrupted prompts (nothing repeats) almost never give the answer."""
    from seqcirc_utils.models.forward import final_logits
    from seqcirc_utils.tasks.datasets import filter_to_correct

    model, _ = smollm
    for template, floor in ACCURACY_FLOOR.items():
        ds = make_dataset(model.tokenizer, INDUCTION_COPY, template=template, length=5, n=64, seed=0)
        logits = final_logits(model, ds.tokens)
        accuracy = float((logits.argmax(-1).cpu() == ds.answer_ids).float().mean())
        assert accuracy >= floor, (template, accuracy)
        if template == "among_words":
            assert len(filter_to_correct(model, ds)) >= 0.7 * len(ds)
        bad = final_logits(model, ds.corrupted_tokens).argmax(-1).cpu()
        assert float((bad == ds.answer_ids).float().mean()) <= 0.1, template
