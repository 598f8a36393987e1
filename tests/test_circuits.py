"""Circuit records: held-out scores, bootstrap intervals, the baseline refusal, the greater-than filter
and the exact two-digit probability difference (against brute-force enumeration)."""

from __future__ import annotations

import pytest
import torch

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import BaselineError
from seqcirc_utils.core.types import Circuit, head, mlp
from seqcirc_utils.discovery import pipeline as circuits
from seqcirc_utils.discovery.pipeline import discover, filter_kind, score_with_ci
from seqcirc_utils.scoring.ablation import MIN_BASELINE, Ablator, check_baseline
from seqcirc_utils.scoring.greater_than import ExactProbDiff
from seqcirc_utils.tasks.datasets import TaskDataset, filter_to_year_continuation, make_dataset

# --------------------------------------------------------------------------- helpers


def _hf_layers(model):
    hf = model.original_model
    if hasattr(hf, "transformer"):  # GPT-2
        return [(b.attn.c_proj, b.mlp) for b in hf.transformer.h]
    return [(l.self_attn.o_proj, l.mlp) for l in hf.model.layers]


def _digit_dataset(model, n=3, seed=0) -> TaskDataset:
    """A greater-than dataset scored as if years split into digit tokens (GPT-2's "0".."9")."""
    ds = make_dataset(model.tokenizer, "greater_than", n=n, seed=seed)
    digits = [model.tokenizer.encode(str(d)) for d in range(10)]
    assert all(len(g) == 1 for g in digits)
    return TaskDataset(ds.model, ds.spec, ds.prompts, ds.answer_token_policy, digits)


def _brute_force_exact_pd(model, info, ds, ablated) -> torch.Tensor:
    """Loop over every prompt and all 100 two-digit continuations, one forward pass each, with the
    ablation written by plain torch hooks: p(a c) = p(a | prompt) p(c | prompt a)."""
    hf = model.original_model
    layers = _hf_layers(model)
    digit_ids = [g[0] for g in ds.greater_than_groups]
    heads_by_layer: dict[int, list[int]] = {}
    mlp_layers = set()
    for c in ablated:
        if c.kind == "head":
            heads_by_layer.setdefault(c.layer, []).append(c.index)
        else:
            mlp_layers.add(c.layer)

    def capture(tokens):
        """Per layer: mean over prompts of the o_proj input and the MLP output, ``[pos, ...]``."""
        got, handles = {}, []
        for l, (proj, mlp_mod) in enumerate(layers):
            handles.append(
                proj.register_forward_pre_hook(
                    lambda mod, args, l=l: got.__setitem__(("z", l), args[0].detach().mean(0))
                )
            )
            handles.append(
                mlp_mod.register_forward_hook(
                    lambda mod, args, out, l=l: got.__setitem__(("m", l), out.detach().mean(0))
                )
            )
        with torch.no_grad():
            hf(tokens)
        for h in handles:
            h.remove()
        return got

    corrupted = ds.corrupted_tokens
    means = {a: capture(torch.cat([corrupted, torch.full((len(ds), 1), a)], 1)) for a in digit_ids}
    pos = ds.seq_len
    out = []
    for b in range(len(ds)):
        yy = int(ds.years[b]) % 100
        pd = 0.0
        for ai, a in enumerate(digit_ids):
            mean = means[a]  # positions 0..pos (the appended tens digit included)
            handles = []
            for l, (proj, mlp_mod) in enumerate(layers):
                if l in heads_by_layer:

                    def pre(mod, args, l=l, mean=mean):
                        x = args[0].clone()
                        for h in heads_by_layer[l]:
                            sl = slice(h * info.d_head, (h + 1) * info.d_head)
                            x[:, : pos + 1, sl] = mean[("z", l)][: pos + 1, sl]
                        return (x,)

                    handles.append(proj.register_forward_pre_hook(pre))
                if l in mlp_layers:

                    def post(mod, args, out, l=l, mean=mean):
                        y = out.clone()
                        y[:, : pos + 1] = mean[("m", l)][: pos + 1]
                        return y

                    handles.append(mlp_mod.register_forward_hook(post))
            try:
                for ci, c in enumerate(digit_ids):
                    seq = torch.tensor([list(ds.prompts[b].tokens) + [a, c]])
                    with torch.no_grad():
                        probs = hf(seq).logits[0].softmax(-1)
                    p = float(probs[pos - 1, a] * probs[pos, c])
                    pd += p if 10 * ai + ci > yy else -p
            finally:
                for h in handles:
                    h.remove()
        out.append(pd)
    return torch.tensor(out)


# --------------------------------------------------------------------------- exact two-digit PD


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_exact_prob_diff_equals_brute_force_enumeration(request, which):
    model, info = request.getfixturevalue(which)
    ds = _digit_dataset(model)
    ablator = Ablator(model, info, ds, metric="logit_diff")
    exact = ExactProbDiff(ablator)
    assert exact.mode == "digit"
    kept = {head(0, 0), mlp(info.n_layers - 1)}
    ablated = [c for c in info.components if c not in kept]
    ours = exact.values(ablated).cpu().double()
    ref = _brute_force_exact_pd(model, info, ds, ablated).double()
    # A random model spreads probability over the whole vocabulary (two-digit mass ~1e-8): compare
    # relatively, not against an absolute tolerance that any two small numbers would pass.
    assert ref.abs().min() > 0
    assert torch.allclose(ours, ref, rtol=1e-3, atol=0)
    full_ref = _brute_force_exact_pd(model, info, ds, []).double()
    assert torch.allclose(exact.full.cpu().double(), full_ref, rtol=1e-3, atol=0)
    assert ((ours - full_ref).abs() / full_ref.abs()).max() > 1e-2  # the ablation matters
    scored = exact.score(kept, n_resamples=200, seed=0)
    assert scored["score"] == pytest.approx(float(ref.mean()) / float(exact.full.mean()), rel=1e-4)


def test_exact_prob_diff_two_digit_tokens_is_the_one_pass_pd(tiny_gpt2):
    model, info = tiny_gpt2
    ds = make_dataset(model.tokenizer, "greater_than", n=6, seed=1)
    assert len(ds.greater_than_groups) == 100  # GPT-2 spells YY as one token
    ablator = Ablator(model, info, ds, metric="prob_diff")
    exact = ExactProbDiff(ablator)
    assert exact.mode == "two_digit"
    ablated = [head(0, 1), mlp(0)]
    # independent: the probability mass of the 100 two-digit tokens above vs at/below YY, by hand
    probs = ablator.logits(ablated).softmax(-1)
    yy = ds.years % 100
    ref = torch.stack(
        [
            sum((1 if v > int(yy[b]) else -1) * probs[b, ds.greater_than_groups[v][0]] for v in range(100))
            for b in range(len(ds))
        ]
    )
    assert torch.allclose(exact.values(ablated), ref, atol=1e-6)


# --------------------------------------------------------------------------- bootstrap, held-out, baseline


def test_score_with_ci_matches_score_and_is_seeded(tiny_llama):
    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=12, seed=0)
    ablator = Ablator(model, info, ds, metric="kl")
    kept = [head(0, 0), head(1, 1), mlp(1)]
    a = score_with_ci(ablator, kept, n_resamples=300, seed=3)
    assert a["score"] == pytest.approx(ablator.score(kept).score, abs=1e-6)
    assert a["ci95"][0] <= a["score"] <= a["ci95"][1]
    assert score_with_ci(ablator, kept, n_resamples=300, seed=3)["ci95"] == a["ci95"]
    assert score_with_ci(ablator, kept, n_resamples=300, seed=4)["ci95"] != a["ci95"]


def test_heldout_score_equals_independent_rescore(tiny_llama, monkeypatch):
    model, info = tiny_llama
    # A random model's output barely moves under ablation (everything-ablated KL ~0.005 nats): lift
    # the baseline floor here; the refusal itself is tested below.
    monkeypatch.setitem(MIN_BASELINE, "kl", 0.0)
    records, ds, _ = discover(
        model,
        info,
        "tiny-llama",
        "digits",
        DiscoveryConfig([0.9, 0.7], method="sweep", metric="kl", filter_correct=False, n_resamples=200),
        progress=False,
        template="pure",
        n=10,
        seed=2,
    )
    assert [r["threshold"] for r in records] == [0.9, 0.7]
    for r in records:
        assert r["kind"] == "circuit" and r["schema_version"] == 3 and r["filter"] == "none"
        assert r["score_ci95"][0] <= r["score"] <= r["score_ci95"][1]
        h = r["heldout"]
        assert h["seed"] == 1002 and r["seed"] == 2
        held = TaskDataset.from_json(r["heldout_dataset"])
        assert h["n_prompts"] == len(held) and held.spec.seed == 1002
        assert held.tokens.tolist() != ds.tokens.tolist()
        assert {k: r["heldout_dataset"][k] for k in ("task", "template", "direction", "length")} == {
            k: r["dataset"][k] for k in ("task", "template", "direction", "length")
        }
        if "prefix" in r["dataset"]:
            assert r["heldout_dataset"]["prefix"] == r["dataset"]["prefix"]
        fresh = Ablator(model, info, held, mode=r["ablation"], metric=r["metric"])
        components = Circuit.from_lists(r["heads"], r["mlps"]).components
        assert h["score"] == pytest.approx(fresh.score(components).score, abs=1e-6)
        assert h["ci95"][0] <= h["score"] <= h["ci95"][1]


def test_heldout_set_grows_when_too_few_fresh_prompts_pass(tiny_llama, monkeypatch):
    """A filter that keeps every other prompt: 8 drawn -> 4 kept < 8 needed, so the held-out set is drawn
    again twice as large (16 -> 8 kept) instead of failing the whole discovery."""
    model, info = tiny_llama
    monkeypatch.setitem(MIN_BASELINE, "kl", 0.0)
    monkeypatch.setattr(circuits, "filter_to_correct", lambda model, ds: ds.subset(range(0, len(ds), 2)))
    drawn = []
    real_make = circuits.make_dataset

    def counting_make(*args, **kwargs):
        ds = real_make(*args, **kwargs)
        drawn.append(len(ds))
        return ds

    monkeypatch.setattr(circuits, "make_dataset", counting_make)
    out, held = circuits.heldout_scores(
        model,
        info,
        "tiny-llama",
        "digits",
        [[head(0, 0)]],
        seed=1000,
        metric="kl",
        template="pure",
        n=8,
        min_prompts=4 + 1,
    )
    assert drawn == [8, 16] and len(held) == 8 and out[0]["n_prompts"] == 8
    with pytest.raises(circuits.TooFewPromptsError, match="pass the filter"):
        circuits.heldout_scores(
            model,
            info,
            "tiny-llama",
            "digits",
            [[head(0, 0)]],
            seed=1000,
            metric="kl",
            template="pure",
            n=2,
            min_prompts=8,
        )


def _zeroed_dataset(model, sign: float) -> TaskDataset:
    """digits prompts whose 'incorrect' answer is the correct one (LD = 0) or swapped (LD negated)."""
    ds = make_dataset(model.tokenizer, "digits", n=8, seed=0)
    for p in ds.prompts:
        if sign == 0:
            p.incorrect_id = p.answer_id
        else:
            p.answer_id, p.incorrect_id = p.incorrect_id, p.answer_id
    return ds


def test_meaningless_baseline_is_refused(tiny_gpt2, monkeypatch):
    model, info = tiny_gpt2
    zero = Ablator(model, info, _zeroed_dataset(model, 0), metric="logit_diff")
    assert zero.full_metric == 0.0
    with pytest.raises(BaselineError, match=r"tiny-gpt2.*digits.*pure") as err:
        check_baseline(zero, "tiny-gpt2")
    assert "0" in str(err.value) and "logit_diff" in str(err.value)
    # of a dataset and its answer-swapped twin, exactly one has a negative full logit difference
    plain = Ablator(model, info, make_dataset(model.tokenizer, "digits", n=8, seed=0), metric="logit_diff")
    swapped = Ablator(model, info, _zeroed_dataset(model, -1), metric="logit_diff")
    assert swapped.full_metric == pytest.approx(-plain.full_metric, abs=1e-5)
    negative = swapped if swapped.full_metric < 0 else plain
    with pytest.raises(BaselineError, match=f"{negative.full_metric:.4g}"):
        check_baseline(negative, "tiny-gpt2")
    positive = plain if negative is swapped else swapped
    if positive.full_metric > MIN_BASELINE["logit_diff"]:
        assert check_baseline(positive, "tiny-gpt2") == positive.full_metric
    # discover refuses before pruning
    monkeypatch.setattr(circuits, "discovery_dataset", lambda *a, **k: _zeroed_dataset(model, 0))
    monkeypatch.setattr(circuits, "prune", lambda *a, **k: pytest.fail("pruned on a meaningless baseline"))
    with pytest.raises(BaselineError, match="meaningless baseline"):
        discover(model, info, "tiny-gpt2", "digits", DiscoveryConfig([0.8], filter_correct=False), progress=False, n=8)


def test_greater_than_default_metric_and_filter(tiny_gpt2):
    model, _ = tiny_gpt2
    assert circuits.resolve_metric("greater_than", None) == "prob_diff"
    assert circuits.resolve_metric("digits", None) == "logit_diff"
    assert filter_kind("greater_than", None) == "year"
    assert filter_kind("greater_than", "logit_diff") == "correct"
    assert filter_kind("digits", None) == "correct"
    assert filter_kind("greater_than", None, filter_correct=False) == "none"
    ds = make_dataset(model.tokenizer, "greater_than", n=16, seed=0)
    kept = filter_to_year_continuation(model, ds)
    with torch.no_grad():
        top = model.original_model(ds.tokens).logits[:, -1].argmax(-1).tolist()
    years = {g[0] for g in ds.greater_than_groups}
    assert [p.text for p in kept.prompts] == [p.text for p, t in zip(ds.prompts, top) if t in years]


# --------------------------------------------------------------------------- embedded model


def test_embedded_greater_than_record_with_exact_pd_and_heldout(smollm):
    model, info = smollm
    records, ds, ablator = discover(
        model,
        info,
        "smollm2-135m",
        "greater_than",
        DiscoveryConfig([0.8], method="fast", n_resamples=200, fast={"minimal": False}),
        progress=False,
        n=12,
        seed=0,
    )
    r = records[0]
    assert r["metric"] == "prob_diff" and r["pruning_metric"] == "tens-digit prob_diff"
    assert r["filter"] == "year" and r["full_metric"] > MIN_BASELINE["prob_diff"]
    e = r["exact_prob_diff"]
    assert e["mode"] == "digit" and -1 <= e["full"] <= 1 and e["score"] == pytest.approx(e["circuit"] / e["full"])
    assert e["ci95"][0] <= e["score"] <= e["ci95"][1]
    held = TaskDataset.from_json(r["heldout_dataset"])
    fresh = Ablator(model, info, held, mode=r["ablation"], metric=r["metric"])
    components = Circuit.from_lists(r["heads"], r["mlps"]).components
    assert r["heldout"]["score"] == pytest.approx(fresh.score(components).score, abs=1e-5)
    assert r["heldout"]["exact_prob_diff"]["full"] == pytest.approx(float(ExactProbDiff(fresh).full.mean()), abs=1e-5)
    # schema 3: cluster unit and the empty-circuit floor, in-sample and held out (recomputed independently)
    assert r["ci_unit"] == "sequence" and r["n_clusters"] == ds.n_sequences
    assert r["heldout"]["n_clusters"] == held.n_sequences and r["heldout"]["ci_unit"] == "sequence"
    empty, full = float(fresh.empty_values().mean()), fresh.full_metric
    assert r["heldout"]["empty_metric"] == pytest.approx(empty, abs=1e-5)
    assert r["heldout"]["faithfulness"] == pytest.approx(
        (fresh.score(components).circuit_metric - empty) / (full - empty), abs=1e-4
    )
    lo, hi = r["faithfulness_ci95"]
    assert lo <= r["faithfulness"] <= hi and r["empty_metric"] < r["full_metric"]
