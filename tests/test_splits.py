"""Issue 17 sections 1, 2, 7: the two-digit ``numbers`` task and sequence-disjoint splits."""

import itertools
import json
import re

import pytest

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import ParameterError, TokenizationError, TooFewPromptsError
from seqcirc_utils.core.options import DIRECTIONS, TASKS, TEMPLATES
from seqcirc_utils.tasks.datasets import (
    CORRUPTIONS,
    FAMILIES,
    GREATER_THAN,
    MIN_SEQUENCES_PER_ROLE,
    NUMBERS,
    Split,
    TaskDataset,
    make_dataset,
    make_split_datasets,
    partition,
    partition_counts,
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


# --------------------------------------------------------------------------- independent identity readers


def _identity(p) -> tuple:
    """A prompt's sequence identity read off its text alone (not via Prompt.sequence_id)."""
    if p.year is not None:
        return ("year", int(re.search(r"from the year (\d{4})", p.text).group(1)))
    return tuple(p.members)


def _fillers(p) -> set[str]:
    """The among_words filler words of a prompt (the word before each 'done/lost/born in')."""
    return set(re.findall(r"(\w+) (?:done|lost|born) in", p.text))


def _gt_noun(p) -> str:
    return re.match(r"The (\w+) lasted", p.text).group(1)


def _combos():
    for task, template, direction in itertools.product(TASKS, TEMPLATES, DIRECTIONS):
        if task == GREATER_THAN and (template, direction) != ("pure", "increasing"):
            continue  # greater-than has one template and direction
        yield task, template, direction


# --------------------------------------------------------------------------- partition arithmetic


def test_partition_counts_against_brute_force():
    for n_items in range(40):
        for shares in [(1, 1), (2, 1), (1, 2, 3), (5, 1)]:
            counts = partition_counts(n_items, shares)
            assert sum(counts) == n_items
            # each count is the floor or the ceiling of its exact share
            for c, s in zip(counts, shares):
                exact = n_items * s / sum(shares)
                assert int(exact) <= c <= int(exact) + 1


def test_partition_is_a_partition_and_seeded():
    items = list(range(86))
    split = Split("discovery", shares=(2, 1), seed=3)
    parts = partition(items, split)
    assert sorted(parts["discovery"] + parts["heldout"]) == items
    assert not set(parts["discovery"]) & set(parts["heldout"])
    assert (len(parts["discovery"]), len(parts["heldout"])) == (57, 29)
    assert partition(items, split) == parts  # deterministic
    assert partition(list(reversed(items)), split) == parts  # independent of the input order
    assert partition(items, Split("discovery", shares=(2, 1), seed=4)) != parts


# --------------------------------------------------------------------------- disjointness everywhere


@pytest.mark.parametrize("load_tokenizer", TOKENIZERS)
def test_split_datasets_are_disjoint_on_every_task_template_direction(load_tokenizer):
    """Every task x template x direction: either the split's two datasets share no sequence identity (nor
    filler word / noun), each drawing only from its own part of the space, or the combination is refused
    with a one-line error (too few sequences, a template the task lacks, a tokenizer the task does not fit)."""
    tok = load_tokenizer()
    built = refused = 0
    built_tasks = set()
    for task, template, direction in _combos():
        options = dict(template=template, direction=direction)
        try:
            space = sequence_space(tok, task, **options)
        except (TokenizationError, ParameterError) as err:  # the task itself does not fit (e.g. numbers on GPT-2)
            assert "\n" not in str(err)
            with pytest.raises(type(err)):
                make_split_datasets(tok, task, n=8, **options)
            refused += 1
            continue
        counts = partition_counts(len(space), (1, 1))
        if min(counts) < MIN_SEQUENCES_PER_ROLE:
            with pytest.raises(TooFewPromptsError, match=f"has {len(space)} distinct"):
                make_split_datasets(tok, task, n=8, **options)
            refused += 1
            continue
        # every identity of each part drawn: n = sequences = the part's size
        parts = partition(space, Split("discovery"), "sequences")
        sizes = {role: {"n": len(part), "sequences": len(part)} for role, part in parts.items()}
        ds = make_split_datasets(tok, task, seed=0, sizes=sizes, **options)
        disc, held = ds["discovery"], ds["heldout"]
        ids_d, ids_h = {_identity(p) for p in disc.prompts}, {_identity(p) for p in held.prompts}
        assert not ids_d & ids_h, (task, template, direction)
        assert sequence_overlap(disc, held) == 0
        assert disc.n_sequences == len(parts["discovery"]) and held.n_sequences == len(parts["heldout"])
        assert disc.n_sequences + held.n_sequences == len(space)
        if template == "among_words" and task != GREATER_THAN:
            assert not set().union(*map(_fillers, disc.prompts)) & set().union(*map(_fillers, held.prompts))
        if task == GREATER_THAN:
            assert not {_gt_noun(p) for p in disc.prompts} & {_gt_noun(p) for p in held.prompts}
            assert {y for _, y in ids_d} == set(parts["discovery"])
        assert disc.to_json()["split"]["role"] == "discovery" and held.to_json()["split"]["role"] == "heldout"
        built += 1
        built_tasks.add(task)
    assert built >= 10 and refused >= 1
    # numbers is built exactly where two-digit numbers are several tokens; days (3 sequences) never splits
    assert (NUMBERS in built_tasks) == (len(tok(" 23", add_special_tokens=False)["input_ids"]) > 1)
    assert "days" not in built_tasks and {"digits", "months", GREATER_THAN} <= built_tasks


def test_split_is_deterministic_by_seed():
    tok = _gpt2_tokenizer()
    a = make_split_datasets(tok, "digits", n=24, seed=5, template="comma")
    b = make_split_datasets(tok, "digits", n=24, seed=5, template="comma")
    assert {r: d.to_json() for r, d in a.items()} == {r: d.to_json() for r, d in b.items()}
    c = make_split_datasets(tok, "digits", n=24, seed=6, template="comma")
    assert set(a["heldout"].sequence_ids) != set(c["heldout"].sequence_ids)
    # a role's dataset does not depend on how the other roles are sized
    d = make_split_datasets(tok, "digits", n=24, seed=5, template="comma", sizes={"heldout": {"n": 4}})
    assert d["discovery"].to_json() == a["discovery"].to_json()


def test_too_small_task_is_refused_with_counts():
    tok = _gpt2_tokenizer()
    assert len(sequence_space(tok, "days")) == 3  # Monday..Sunday, 4 shown + the answer
    with pytest.raises(TooFewPromptsError, match=r"has 3 distinct sequences.*'discovery': 2, 'heldout': 1.*minimum 2"):
        make_split_datasets(tok, "days", n=8)
    # more roles than the space can feed
    with pytest.raises(TooFewPromptsError, match="minimum 3"):
        make_split_datasets(tok, "months", n=8, roles=("a", "b", "c"), min_sequences=3)
    # asking for more distinct sequences than a role has
    with pytest.raises(TooFewPromptsError, match="60 distinct sequences asked, only 48 available"):
        make_dataset(tok, "digits", n=64, sequences=60, split=Split("heldout"))
    with pytest.raises(ParameterError, match="unknown split role 'test'; valid: discovery, heldout"):
        make_dataset(tok, "digits", split=Split("test"))
    with pytest.raises(ParameterError, match="sequences must be a positive integer <= n"):
        make_dataset(tok, "digits", n=4, sequences=8)


def test_sequences_option_draws_exactly_k_and_cycles():
    tok = _gpt2_tokenizer()
    ds = make_dataset(tok, "digits", n=30, sequences=12, seed=1)
    assert ds.n_sequences == 12
    ids = ds.sequence_ids
    assert all(ids[i] == ids[i % 12] for i in range(30))
    gt = make_dataset(tok, "greater_than", n=20, sequences=10, seed=1)
    assert gt.n_sequences == 10 and len({p.year for p in gt.prompts}) == 10


def test_split_json_round_trip():
    tok = _gpt2_tokenizer()
    ds = make_split_datasets(tok, "greater_than", n=6, shares=(2, 1), seed=2, sequences=3)["heldout"]
    data = json.loads(json.dumps(ds.to_json()))
    assert data["split"] == {
        "role": "heldout",
        "roles": ["discovery", "heldout"],
        "shares": [2, 1],
        "seed": 2,
        "min_sequences": MIN_SEQUENCES_PER_ROLE,
    }
    assert data["sequences"] == 3 and data["n_sequences"] == 3
    back = TaskDataset.from_json(data)
    assert back.to_json() == data and back.spec.split == Split("heldout", shares=(2, 1), seed=2)


# --------------------------------------------------------------------------- the numbers task


def test_numbers_refused_on_gpt2_naming_digits():
    tok = _gpt2_tokenizer()
    assert len(tok.encode(" 23")) == 1  # GPT-2 spells two-digit numbers as one token
    with pytest.raises(TokenizationError, match="use task digits") as err:
        make_dataset(tok, "numbers")
    assert "\n" not in str(err.value)


def test_numbers_bad_options_refused():
    tok = _gpt2_tokenizer()
    with pytest.raises(ParameterError, match="not a multiple of 10"):
        make_dataset(tok, "numbers", step=10)
    with pytest.raises(ParameterError, match="use task digits"):
        make_dataset(tok, "numbers", template="mixed")


@pytest.mark.embedded
@pytest.mark.parametrize("template,direction", [(t, d) for t in ("pure", "comma", "among_words") for d in DIRECTIONS])
def test_numbers_prompts_on_smollm2_tokenizer(template, direction):
    tok = _smollm_tokenizer()
    ds = make_dataset(tok, "numbers", template=template, direction=direction, n=40, seed=2)
    ds.check_uniform_length()
    sign = 1 if direction == "increasing" else -1
    for p in ds.prompts:
        values = [int(m) for m in p.members]
        assert all(10 <= v <= 99 for v in values) and all(b - a == sign for a, b in zip(values, values[1:]))
        answer = values[-1] + sign
        assert 10 <= answer <= 99
        # the prompt ends after the answer's tens digit; the answer is its units digit
        assert p.text.endswith(" " + str(answer)[0]) and tok.decode([p.tokens[-1]]).strip() == str(answer)[0]
        assert tok.decode([p.answer_id]) == str(answer)[1] == p.answer
        assert tok.decode([p.incorrect_id]) == p.members[-1][1] == p.incorrect
        assert tok(p.text + p.answer, add_special_tokens=False)["input_ids"] == p.tokens[1:] + [p.answer_id]
        assert p.crosses_decade == (answer // 10 != values[-1] // 10)
        # members are two tokens: tens then units; positions are the units digits
        for pos, m in zip(p.member_positions, p.members):
            assert tok.decode([p.tokens[pos - 1]]) == m[0] and tok.decode([p.tokens[pos]]) == m[1]
        for pos, m in zip(p.member_positions, p.corrupted_members):
            assert tok.decode([p.corrupted_tokens[pos - 1]]) == m[0] and tok.decode([p.corrupted_tokens[pos]]) == m[1]
        assert p.corrupted_text.endswith(" " + str(answer)[0]) and len(p.corrupted_tokens) == len(p.tokens)
        assert p.sequence_id == " ".join(p.members)


@pytest.mark.embedded
def test_numbers_space_and_decade_crossings():
    tok = _smollm_tokenizer()
    for direction in DIRECTIONS:
        space = sequence_space(tok, "numbers", direction=direction)
        sign = 1 if direction == "increasing" else -1
        brute = [s for s in range(10, 100) if all(10 <= s + sign * k <= 99 for k in range(5))]
        assert space == brute and len(space) == 86
    ds = make_dataset(tok, "numbers", n=86, sequences=86, seed=0)
    crossing = sorted(p.sequence_id for p in ds.prompts if p.crosses_decade)
    assert len(crossing) == 8 and "17 18 19 20" not in crossing and "16 17 18 19" in crossing


@pytest.mark.embedded
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_numbers_corruptions(kind):
    tok = _smollm_tokenizer()
    ds = make_dataset(tok, "numbers", template="comma", corruption=kind, n=16, seed=3)
    for p in ds.prompts:
        clean, bad = [int(m) for m in p.members], [int(m) for m in p.corrupted_members]
        if kind == "switchLastTwo":
            assert bad == clean[:-2] + [clean[-1], clean[-2]]
        elif kind == "repeatFirstAll":
            assert bad == [clean[0]] * len(clean)
        elif kind in ("randAll", "permutation"):
            assert bad != clean


def test_crosses_decade_defaults_and_round_trips(tiny_gpt2):
    tok = tiny_gpt2[0].tokenizer
    ds = make_dataset(tok, "digits", n=4, seed=0)
    assert all(p.crosses_decade is None for p in ds.prompts)
    old = ds.to_json()
    for p in old["prompts"]:
        del p["crosses_decade"]  # JSON written before the field loads with the default
    assert all(p.crosses_decade is None for p in TaskDataset.from_json(old).prompts)


@pytest.mark.embedded
def test_numbers_json_round_trip_keeps_crossings():
    tok = _smollm_tokenizer()
    ds = make_dataset(tok, "numbers", n=30, seed=1)
    data = json.loads(json.dumps(ds.to_json()))
    back = TaskDataset.from_json(data)
    assert back.to_json() == data
    assert [p.crosses_decade for p in back.prompts] == [p.crosses_decade for p in ds.prompts]


def test_numbers_in_task_choices():
    assert NUMBERS in TASKS and NUMBERS not in FAMILIES


# --------------------------------------------------------------------------- behaviour on the embedded model


def test_numbers_behaviour_on_embedded_model(smollm):
    """SmolLM2 answers every increasing two-digit sequence of length 4 (issue 17: 86 of 86, LD ~5.7)."""
    from seqcirc_utils.tasks.behaviour import evaluate

    model, _ = smollm
    ds = make_dataset(model.tokenizer, "numbers", template="pure", n=86, sequences=86, seed=0)
    assert ds.n_sequences == 86
    row = evaluate(model, ds)
    assert row["top1_accuracy"] >= 0.95
    assert row["logit_diff"] > 4.0
    assert row["n_crossing"] == 8 and row["crossing_top1_accuracy"] >= 0.85 and row["crossing_logit_diff"] > 4.0


# --------------------------------------------------------------------------- discovery's held-out side


def _members(dataset_json: dict) -> set[tuple]:
    return {tuple(p["members"]) for p in dataset_json["prompts"]}


def test_discover_holds_out_disjoint_sequences(tiny_llama, monkeypatch, one_thread):
    from seqcirc_utils.discovery.pipeline import discover
    from seqcirc_utils.scoring.ablation import MIN_BASELINE

    model, info = tiny_llama
    monkeypatch.setitem(MIN_BASELINE, "kl", 0.0)  # a random model barely moves: lift the floor (test_circuits)
    records, ds, _ = discover(
        model,
        info,
        "tiny-llama",
        "digits",
        DiscoveryConfig([0.7], method="sweep", metric="kl", filter_correct=False, n_resamples=50),
        progress=False,
        template="pure",
        n=16,
        seed=4,
    )
    r = records[0]
    held = r["heldout"]
    assert held["split"] == "disjoint" and held["overlap"] == 0
    # independent: the member tuples of the two stored datasets share nothing
    assert not _members(r["dataset"]) & _members(r["heldout_dataset"])
    assert r["n_sequences"] == len(_members(r["dataset"])) == ds.n_sequences
    assert held["n_sequences"] == len(_members(r["heldout_dataset"]))
    assert r["dataset"]["split"]["role"] == "discovery" and r["heldout_dataset"]["split"]["role"] == "heldout"
    assert r["dataset"]["split"]["seed"] == r["heldout_dataset"]["split"]["seed"] == 4
    # the old same-pool draw only when asked for, and labelled
    records, _, _ = discover(
        model,
        info,
        "tiny-llama",
        "digits",
        DiscoveryConfig([0.7], method="sweep", metric="kl", filter_correct=False, n_resamples=50, split="resampled"),
        progress=False,
        template="pure",
        n=16,
        seed=4,
    )
    held = records[0]["heldout"]
    assert held["split"] == "resampled"
    assert held["overlap"] == len(_members(records[0]["dataset"]) & _members(records[0]["heldout_dataset"]))
    assert records[0]["dataset"]["split"] is None


def test_discover_sizes_by_sequences(tiny_llama, monkeypatch, one_thread, tmp_path):
    """Issue 17 section 7: discovery on k distinct sequences and held out on m others (shares 2 : 1)."""
    from seqcirc_utils.discovery.pipeline import discover
    from seqcirc_utils.scoring.ablation import MIN_BASELINE

    model, info = tiny_llama
    monkeypatch.setitem(MIN_BASELINE, "kl", 0.0)
    records, _, _ = discover(
        model,
        info,
        "tiny-llama",
        "digits",
        DiscoveryConfig([0.7], method="sweep", metric="kl", filter_correct=False, split_shares=(2, 1), n_resamples=50),
        progress=False,
        template="pure",
        n=48,
        sequences=48,
        seed=0,
        heldout_options={"n": 24, "sequences": 24},
    )
    r = records[0]
    assert r["n_sequences"] == 48 and r["heldout"]["n_sequences"] == 24 and r["heldout"]["overlap"] == 0
    assert r["heldout"]["n_prompts"] == 24 and r["heldout_dataset"]["split"]["shares"] == [2, 1]

    # the short form: config.sequences = (discovery, held-out), shares in those proportions
    short = DiscoveryConfig(
        [0.7], method="sweep", metric="kl", filter_correct=False, sequences=(40, 20), n_resamples=50
    )
    records, _, _ = discover(model, info, "tiny-llama", "digits", short, progress=False, template="pure", seed=0)
    r = records[0]
    assert (r["n_prompts"], r["n_sequences"]) == (40, 40) and r["dataset"]["split"]["shares"] == [40, 20]
    assert (r["heldout"]["n_prompts"], r["heldout"]["n_sequences"], r["heldout"]["overlap"]) == (20, 20, 0)
    with pytest.raises(ParameterError, match=r"config.sequences=\[40, 20\] sizes both sets .* drop \['n'\]"):
        discover(model, info, "tiny-llama", "digits", short, progress=False, n=40)

    # another chapter takes this circuit only when it was found the same way
    from seqcirc_utils.discovery.pipeline import reusable_circuit, write_circuits

    path = write_circuits(tmp_path / "circuit_digits.json", records)
    found_as = dict(model="tiny-llama", task="digits", template="pure", seed=0, method="sweep", metric="kl")
    reused, why = reusable_circuit(path, 0.7, found_as, (40, 20))
    assert why == "" and reused is not None and reused["heads"] == r["heads"] and reused["mlps"] == r["mlps"]
    assert reusable_circuit(path, 0.7, found_as | {"template": "comma"}, (40, 20)) == (
        None,
        "circuit_digits.json at 0.7 was found with another template",
    )
    assert reusable_circuit(path, 0.7, found_as | {"seed": 1}, (48, 24))[1].endswith(
        "another seed, sequences, split shares"
    )
    assert reusable_circuit(path, 0.8, found_as, (40, 20))[1] == "circuit_digits.json has no circuit at 0.8"
    assert reusable_circuit(tmp_path / "none.json", 0.7, found_as, (40, 20))[1] == "none.json does not exist"


def test_discover_refuses_a_task_too_small_to_split(tiny_gpt2, monkeypatch):
    from seqcirc_utils.discovery import pipeline

    model, info = tiny_gpt2
    monkeypatch.setattr(pipeline, "prune", lambda *a, **k: pytest.fail("pruned a task that cannot be split"))
    with pytest.raises(TooFewPromptsError, match="has 3 distinct sequences"):
        pipeline.discover(
            model, info, "tiny-gpt2", "days", DiscoveryConfig([0.8], filter_correct=False), progress=False, n=8
        )
    with pytest.raises(ParameterError, match="unknown split 'overlap'; valid: disjoint, resampled"):
        pipeline.discover(
            model, info, "tiny-gpt2", "digits", DiscoveryConfig([0.8], split="overlap"), progress=False, n=8
        )


def test_behaviour_table_lists_numbers_and_reports_the_refusal(tiny_gpt2):
    from seqcirc_utils.tasks.behaviour import DEFAULT_SEQUENCE_TASKS, behaviour_table

    assert NUMBERS in DEFAULT_SEQUENCE_TASKS
    model, _ = tiny_gpt2
    table = behaviour_table(
        model,
        "tiny-gpt2",
        families=("digits", "numbers"),
        templates=("pure",),
        directions=("increasing",),
        n=4,
        include_greater_than=False,
        progress=False,
    )
    numbers = table[table["task"] == "numbers"].iloc[0]
    assert numbers["n"] == 0 and "use task digits" in numbers["error"]
    assert table[table["task"] == "digits"].iloc[0]["n"] == 4
