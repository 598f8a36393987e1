from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.tasks.behaviour import evaluate
from seqcirc_utils.tasks.datasets import filter_to_correct, make_dataset


def test_embedded_model_continues_digits(smollm):
    model, _ = smollm
    ds = make_dataset(model.tokenizer, "digits", template="pure", n=64, seed=0)
    row = evaluate(model, ds)
    assert row["n"] == 64 and row["top1_accuracy"] >= 0.8 and row["logit_diff"] > 0


def test_filter_to_correct_keeps_only_correct(smollm):
    model, _ = smollm
    # months / among_words: the model gets some prompts right and some wrong (with the document prefix it
    # answers every months / comma prompt)
    ds = make_dataset(model.tokenizer, "months", template="among_words", n=32, seed=0)
    kept = filter_to_correct(model, ds)
    assert 0 < len(kept) < len(ds)
    assert evaluate(model, kept)["top1_accuracy"] == 1.0


def test_cli_dataset_json(capsys):
    import json

    from seqcirc_utils.workflow.cli import main

    assert main(["dataset", "--model", "tiny-gpt2", "--task", "digits", "--n", "3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "tiny-gpt2" and len(data["prompts"]) == 3


def test_cli_dataset_prefix(capsys):
    import json

    from seqcirc_utils.models.loading import gpt2_tokenizer
    from seqcirc_utils.workflow.cli import main

    eot = gpt2_tokenizer().convert_tokens_to_ids("<|endoftext|>")
    runs = {}
    for prefix in ("document", "none"):
        assert main(["dataset", "--model", "tiny-gpt2", "--n", "2", "--prefix", prefix, "--format", "json"]) == 0
        runs[prefix] = json.loads(capsys.readouterr().out)
    assert runs["document"]["prefix"] == {"mode": "document", "token_id": eot, "token": "<|endoftext|>"}
    assert runs["document"]["prompts"][0]["tokens"][0] == eot
    assert runs["none"]["prefix"]["token_id"] is None
    assert runs["none"]["prompts"][0]["tokens"] == runs["document"]["prompts"][0]["tokens"][1:]
    assert main(["dataset", "--model", "tiny-gpt2", "--prefix", "chat"]) == 2
    assert "invalid choice: 'chat' (choose from 'document', 'bos', 'none')" in capsys.readouterr().err


def test_prefix_table_matches_behaviour_tables(tiny_llama):
    """prefix_table stacks one behaviour_table per prefix; its rows equal separate runs (an independent call)."""
    from seqcirc_utils.tasks.behaviour import behaviour_table, prefix_summary, prefix_table

    model, _ = tiny_llama
    kwargs = dict(
        families=("digits", "months"),
        templates=("pure",),
        directions=("increasing",),
        n=4,
        seed=0,
        include_greater_than=False,
        progress=False,
    )
    stacked = prefix_table(model, "tiny-llama", **kwargs)
    assert list(dict.fromkeys(stacked["prefix"])) == ["document", "bos", "none"]
    for p in ("document", "none"):
        alone = behaviour_table(model, "tiny-llama", prefix=p, **kwargs)
        got = stacked[stacked["prefix"] == p].drop(columns=["prefix_token"]).reset_index(drop=True)
        assert got[alone.columns].equals(alone)
    # the "none" rows really ran prompts without the prefix: a hand-built evaluation agrees
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0, prefix="none")
    assert (
        stacked.query("prefix == 'none' and task == 'digits'")["logit_diff"].item() == evaluate(model, ds)["logit_diff"]
    )
    summary = prefix_summary(stacked, "logit_diff")
    assert list(summary.columns) == ["task", "direction", "document", "bos", "none"]
    row = summary[summary["task"] == "months"].iloc[0]
    assert row["none"] == stacked.query("prefix == 'none' and task == 'months'")["logit_diff"].item()


def test_bad_prefix_raises_before_work(tiny_gpt2):
    import pytest

    from seqcirc_utils.tasks.behaviour import behaviour_table, prefix_table

    with pytest.raises(ParameterError, match="valid: document, bos, none"):
        behaviour_table(tiny_gpt2[0], "tiny-gpt2", prefix="chat")
    with pytest.raises(ParameterError, match="valid: document, bos, none"):
        prefix_table(tiny_gpt2[0], "tiny-gpt2", prefixes=("document", "chat"))
