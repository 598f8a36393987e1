"""Ground truth for circuit discovery: a hand-built transformer with a planted circuit.

The planted set is checked to be *the* circuit by brute force (every subset of the model's ten
components scored by a raw hooked forward pass, independent of the Ablator), then each discovery
method must recover it."""

import itertools

import pytest
import torch

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.evaluation import planted as P
from seqcirc_utils.scoring.ablation import Ablator

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def pm():
    return P.build_planted_model()


@pytest.fixture(scope="module")
def dataset(pm):
    return P.planted_dataset(pm, n=16, seed=0)


def _hook(c) -> str:
    return f"blocks.{c.layer}.attn.hook_z" if c.is_head else f"blocks.{c.layer}.hook_mlp_out"


@pytest.fixture(scope="module")
def means(pm, dataset):
    """Per-position means over the corrupted prompts of every head's z and MLP's output, from one raw pass."""
    with torch.no_grad():
        _, cache = pm.model.run_with_cache(dataset.corrupted_tokens)
    return {_hook(c): cache[_hook(c)].mean(0) for c in pm.info.components}


def _raw_logit_diff(pm, ds, means, ablated) -> float:
    """Mean logit difference with ``ablated`` components replaced by their per-position corrupted means,
    computed with plain hooks on the bridge (no Ablator): heads at hook_z, MLPs at hook_mlp_out."""
    hooks = []
    for c in ablated:

        def fn(act, hook, c=c):
            act = act.clone()
            if c.is_head:
                act[:, :, c.index] = means[_hook(c)][:, c.index]
            else:
                act[:] = means[_hook(c)]
            return act

        hooks.append((_hook(c), fn))
    with torch.no_grad():
        logits = pm.model.run_with_hooks(ds.tokens, fwd_hooks=hooks)[:, -1]
    rows = torch.arange(len(ds))
    return float((logits[rows, ds.answer_ids] - logits[rows, ds.incorrect_ids]).mean())


def test_model_solves_the_task_and_the_planted_set_is_the_unique_minimal_circuit(pm, dataset, means):
    comps = pm.info.components
    assert len(comps) == 10 and pm.planted == {head(0, 0), head(1, 0), mlp(1)}
    full = _raw_logit_diff(pm, dataset, means, [])
    with torch.no_grad():
        top = pm.model(dataset.tokens)[:, -1].argmax(-1)
    assert torch.equal(top, dataset.answer_ids) and full > 5
    passing = []
    for r in range(len(comps) + 1):
        for kept in itertools.combinations(comps, r):
            score = _raw_logit_diff(pm, dataset, means, [c for c in comps if c not in kept]) / full
            if score >= THRESHOLD:
                passing.append(frozenset(kept))
    for c in pm.distractors:  # a distractor alone barely moves the logit difference (LayerNorm is near-linear)
        assert abs(_raw_logit_diff(pm, dataset, means, [c]) / full - 1) < 0.01, c
    minimal = [s for s in passing if not any(o < s for o in passing)]
    assert minimal == [pm.planted]
    assert all(pm.planted <= s for s in passing)  # every passing circuit contains the planted one


def test_distractors_write_non_trivially(pm, dataset):
    """Mean ablation moves each distractor's output (final position) at least half as far as the
    planted heads', so the methods must tell them apart by effect, not by activity."""
    _, cache = pm.model.run_with_cache(dataset.tokens)
    _, bad = pm.model.run_with_cache(dataset.corrupted_tokens)

    def moved(c) -> float:
        if c.is_head:
            name = f"blocks.{c.layer}.attn.hook_z"
            w_o = pm.model.W_O[c.layer, c.index]
            out, mean = cache[name][:, -1, c.index] @ w_o, bad[name][:, -1, c.index].mean(0) @ w_o
        else:
            name = f"blocks.{c.layer}.hook_mlp_out"
            out, mean = cache[name][:, -1], bad[name][:, -1].mean(0)
        return float((out - mean).norm(dim=-1).mean())

    planted_heads = min(moved(c) for c in pm.planted if c.is_head)
    for c in pm.distractors:
        assert moved(c) >= 0.5 * planted_heads, c


def test_ablator_agrees_with_raw_hooks(pm, dataset, means):
    ab = Ablator(pm.model, pm.info, dataset)
    assert ab.full_metric == pytest.approx(_raw_logit_diff(pm, dataset, means, []), rel=1e-5)
    some = [head(0, 0), head(1, 2), mlp(0)]
    assert ab.score_ablated(some) == pytest.approx(_raw_logit_diff(pm, dataset, means, some) / ab.full_metric, rel=1e-4)


def test_every_method_recovers_the_planted_circuit(pm):
    table = P.ground_truth_table(threshold=THRESHOLD, n_prompts=24, ig_steps=5, pm=pm)
    assert list(table["method"]) == list(P.PLANTED_METHODS)
    planted = " ".join(str(c) for c in sorted(pm.planted, key=lambda c: (c.layer, c.kind != "head", c.index or 0)))
    for row in table.itertuples():
        assert row.found == planted, row.method
        assert row.precision == 1.0 and row.recall == 1.0
        assert row.score >= THRESHOLD
    eap = table.set_index("method").loc["eap-ig"]
    assert eap["top_k_hits"] == len(pm.planted)  # the planted nodes rank top under EAP-IG


def test_precision_recall_brute_force():
    planted = frozenset({head(0, 0), head(1, 0), mlp(1)})
    found = {head(0, 0), mlp(1), head(0, 3), mlp(0)}
    assert P.precision_recall(found, planted) == (2 / 4, 2 / 3)
    assert P.precision_recall(set(), planted) == (1.0, 0.0)


def test_bad_inputs_name_valid_values():
    with pytest.raises(ParameterError, match="valid: digits"):
        P.member_token_forms(None, "planets")
    with pytest.raises(ParameterError, match="valid: sweep, fast, eap-ig"):
        P.ground_truth_table(methods=["acdc"])
