from seqcirc_utils.behaviour import evaluate
from seqcirc_utils.tasks import filter_to_correct, make_dataset


def test_embedded_model_continues_digits(smollm):
    model, _ = smollm
    ds = make_dataset(model.tokenizer, "digits", template="pure", n=64, seed=0)
    row = evaluate(model, ds)
    assert row["n"] == 64 and row["top1_accuracy"] >= 0.8 and row["logit_diff"] > 0


def test_filter_to_correct_keeps_only_correct(smollm):
    model, _ = smollm
    ds = make_dataset(model.tokenizer, "months", template="comma", n=32, seed=0)
    kept = filter_to_correct(model, ds)
    assert 0 < len(kept) < len(ds)
    assert evaluate(model, kept)["top1_accuracy"] == 1.0


def test_cli_dataset_json(capsys):
    import json

    from seqcirc_utils.cli import main

    assert main(["dataset", "--model", "tiny-gpt2", "--task", "digits", "--n", "3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "tiny-gpt2" and len(data["prompts"]) == 3
