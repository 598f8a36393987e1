"""How well a model continues each task: the compendium's first table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core import metrics
from seqcirc_utils.core.errors import ParameterError, SeqcircError
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.tasks.datasets import (
    FAMILIES,
    GREATER_THAN,
    MIXED_FAMILIES,
    NUMBERS,
    PREFIX_MODES,
    TaskDataset,
    make_dataset,
    resolve_prefix,
)

DEFAULT_TEMPLATES = ("pure", "comma", "among_words", "mixed")
DEFAULT_DIRECTIONS = ("increasing", "decreasing")
#: The sequence tasks of the behaviour table: the families and the two-digit ``numbers`` task.
DEFAULT_SEQUENCE_TASKS = (*FAMILIES, NUMBERS)


def evaluate(model, dataset: TaskDataset, batch_size: int = 64) -> dict:
    """Top-1 accuracy, mean p(correct), mean logit difference (and PD for greater-than) on ``dataset``.

    For ``numbers``, also the prompts whose answer starts a new decade on their own (``n_crossing``,
    ``crossing_top1_accuracy``, ``crossing_logit_diff``; NaN when there are none)."""
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
    if dataset.task == NUMBERS:
        crossing = [i for i, p in enumerate(dataset.prompts) if p.crosses_decade]
        rows = torch.tensor(crossing, dtype=torch.long, device=logits.device)
        sub = logits[rows]
        row["n_crossing"] = len(crossing)
        row["crossing_top1_accuracy"] = (
            metrics.top1_accuracy(sub, dataset.answer_ids[crossing]) if crossing else float("nan")
        )
        row["crossing_logit_diff"] = (
            metrics.mean_logit_diff(sub, dataset.answer_ids[crossing], dataset.incorrect_ids[crossing])
            if crossing
            else float("nan")
        )
    return row


def behaviour_table(
    model,
    model_name: str,
    families: Sequence[str] = DEFAULT_SEQUENCE_TASKS,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    directions: Sequence[str] = DEFAULT_DIRECTIONS,
    n: int = 64,
    seed: int = 0,
    include_greater_than: bool = True,
    prefix: str = "document",
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (task, template, direction): n, top-1 accuracy, mean p(correct), mean logit diff
    (and ``prob_diff`` for greater-than), plus the ``prefix`` mode the prompts start with.

    Combinations the tokenizer cannot express (e.g. a family whose members are not single tokens)
    are reported with an ``error`` column instead of being skipped silently. A ``prefix`` the
    tokenizer cannot give (e.g. ``"bos"`` without a bos token) raises :class:`ParameterError` up front.
    """
    if prefix not in PREFIX_MODES:
        raise ParameterError(f"unknown prefix {prefix!r}; valid: {', '.join(PREFIX_MODES)}")
    resolve_prefix(model.tokenizer, prefix)
    rows = []
    combos = [
        (f, t, d)
        for f, t, d in itertools.product(families, templates, directions)
        if not (t == "mixed" and f not in MIXED_FAMILIES)
    ]
    if include_greater_than:
        combos.append((GREATER_THAN, "pure", "increasing"))
    for family, template, direction in tqdm(combos, desc=f"behaviour ({prefix})", leave=False, disable=not progress):
        base = {"prefix": prefix, "task": family, "template": template, "direction": direction}
        try:
            ds = make_dataset(
                model.tokenizer,
                family,
                template=template,
                direction=direction,
                n=n,
                seed=seed,
                model_name=model_name,
                prefix=prefix,
            )
        except SeqcircError as err:  # this task does not fit this tokenizer or these sizes
            rows.append({**base, "n": 0, "error": str(err)})
            continue
        rows.append({**base, **evaluate(model, ds)})
    return pd.DataFrame(rows)


def prefix_table(model, model_name: str, prefixes: Sequence[str] = PREFIX_MODES, **kwargs) -> pd.DataFrame:
    """:func:`behaviour_table` once per prompt prefix, stacked (column ``prefix``; plus ``prefix_token``,
    the token string, ``""`` for ``"none"``). A prefix this tokenizer cannot give gets one row with
    an ``error``. Keyword arguments go to :func:`behaviour_table`."""
    for p in prefixes:
        if p not in PREFIX_MODES:
            raise ParameterError(f"unknown prefix {p!r}; valid: {', '.join(PREFIX_MODES)}")
    frames = []
    for p in prefixes:
        try:
            token = resolve_prefix(model.tokenizer, p).token or ""
        except ParameterError as err:
            frames.append(pd.DataFrame([{"prefix": p, "prefix_token": None, "n": 0, "error": str(err)}]))
            continue
        frames.append(behaviour_table(model, model_name, prefix=p, **kwargs).assign(prefix_token=token))
    return pd.concat(frames, ignore_index=True)


def prefix_summary(table: pd.DataFrame, value: str = "top1_accuracy") -> pd.DataFrame:
    """Mean ``value`` per (task, direction) over templates, one column per prefix (in table order).

    ``table`` is :func:`prefix_table`'s output; combinations that could not be built are left out.
    """
    ok = table[table["n"] > 0]
    order = list(dict.fromkeys(ok["prefix"]))
    out = ok.pivot_table(index=["task", "direction"], columns="prefix", values=value, aggfunc="mean")
    return out[order].reset_index().rename_axis(columns=None)
