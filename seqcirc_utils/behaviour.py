"""How well a model continues each task: the compendium's first table."""

from __future__ import annotations

import itertools
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from . import metrics
from .forward import final_logits
from .tasks import FAMILIES, GREATER_THAN, TaskDataset, TokenizationError, make_dataset

DEFAULT_TEMPLATES = ("pure", "comma", "among_words", "mixed")
DEFAULT_DIRECTIONS = ("increasing", "decreasing")


def evaluate(model, dataset: TaskDataset, batch_size: int = 64) -> dict:
    """Top-1 accuracy, mean p(correct), mean logit difference (and PD for greater-than) on ``dataset``."""
    logits = final_logits(model, dataset.tokens, batch_size=batch_size)
    row = {
        "n": len(dataset),
        "top1_accuracy": metrics.top1_accuracy(logits, dataset.answer_ids),
        "p_correct": float(metrics.prob_of(logits, dataset.answer_ids).mean()),
        "logit_diff": metrics.mean_logit_diff(logits, dataset.answer_ids, dataset.incorrect_ids),
    }
    if dataset.task == GREATER_THAN:
        groups = dataset.greater_than_groups
        thresholds = metrics.greater_than_thresholds(dataset.years, len(groups))
        row["prob_diff"] = float(metrics.greater_than_prob_diff(logits, thresholds, groups).mean())
    return row


def behaviour_table(
    model,
    model_name: str,
    families: Sequence[str] = tuple(FAMILIES),
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    directions: Sequence[str] = DEFAULT_DIRECTIONS,
    n: int = 64,
    seed: int = 0,
    include_greater_than: bool = True,
) -> pd.DataFrame:
    """One row per (task, template, direction): n, top-1 accuracy, mean p(correct), mean logit diff.

    Combinations the tokenizer cannot express (e.g. a family whose members are not single tokens)
    are reported with an ``error`` column instead of being skipped silently.
    """
    rows = []
    combos = [
        (f, t, d) for f, t, d in itertools.product(families, templates, directions)
        if not (t == "mixed" and f not in ("digits", "number_words", "months"))
    ]
    if include_greater_than:
        combos.append((GREATER_THAN, "pure", "increasing"))
    for family, template, direction in tqdm(combos, desc="behaviour", leave=False):
        base = {"task": family, "template": template, "direction": direction}
        try:
            ds = make_dataset(model.tokenizer, family, template=template, direction=direction, n=n, seed=seed,
                              model_name=model_name)
        except (TokenizationError, ValueError) as err:
            rows.append({**base, "n": 0, "error": str(err)})
            continue
        rows.append({**base, **evaluate(model, ds)})
    return pd.DataFrame(rows)
