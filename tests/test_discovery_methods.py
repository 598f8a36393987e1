"""Chapter 13: the backup planted model's mechanisms against raw hooked forward passes, the knockout finding
the backup, the methods' ground-truth table, ROC AUC against a brute-force count, EAP-IG node sums against the
edge-by-edge sum, the methods' CPR / CMD p-values against random rankings by a brute-force loop, and the
record round trip."""

from __future__ import annotations

import pytest
import torch
from record_fixtures import discovery_methods, example, row

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.result_records import DiscoveryMethods
from seqcirc_utils.core.stats import roc_auc
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.edges.attribution import edge_attribution_node_sums
from seqcirc_utils.evaluation import curves
from seqcirc_utils.evaluation import methods as M
from seqcirc_utils.evaluation import planted as P
from seqcirc_utils.mechanisms.knockout import KnockoutAblator, circuit_of, compensation
from seqcirc_utils.scoring.ablation import Ablator


@pytest.fixture(scope="module")
def pm():
    return P.build_backup_planted_model()


@pytest.fixture(scope="module")
def dataset(pm):
    return P.planted_dataset(pm, n=16, seed=0)


@pytest.fixture(scope="module")
def means(pm, dataset):
    """Per-position corrupted-prompt means of every head's z and MLP's output, from one raw pass."""
    with torch.no_grad():
        _, cache = pm.model.run_with_cache(dataset.corrupted_tokens)
    return {n: cache[n].mean(0) for n in cache if n.endswith("attn.hook_z") or n.endswith("hook_mlp_out")}


def _hook_name(c) -> str:
    return f"blocks.{c.layer}.attn.hook_z" if c.is_head else f"blocks.{c.layer}.hook_mlp_out"


def _raw(pm, ds, means, ablated, names=()):
    """Final-position logits ``[batch, vocab]`` with ``ablated`` replaced by their corrupted means (plain hooks,
    no Ablator), and the cached activations ``names``."""
    hooks = []
    for c in ablated:

        def fn(act, hook, c=c):
            act = act.clone()
            if c.is_head:
                act[:, :, c.index] = means[_hook_name(c)][:, c.index]
            else:
                act[:] = means[_hook_name(c)]
            return act

        hooks.append((_hook_name(c), fn))
    store = {}

    def keeper(name: str):
        def keep(act, hook):  # noqa: ARG001 - TransformerLens signature
            store[name] = act.detach().clone()
            return act

        return keep

    with torch.no_grad():
        logits = pm.model.run_with_hooks(ds.tokens, fwd_hooks=hooks + [(n, keeper(n)) for n in names])[:, -1]
    return logits, store


def _ld(ds, logits) -> float:
    rows = torch.arange(len(ds))
    return float((logits[rows, ds.answer_ids] - logits[rows, ds.incorrect_ids]).mean())


def test_roles_and_the_task_is_solved(pm, dataset):
    assert pm.with_role("primary") == [head(1, 0)] and pm.with_role("backup") == [head(2, 0)]
    assert pm.with_role("negative") == [head(1, 1)] and pm.with_role("logit distractor") == [head(2, 1)]
    assert pm.planted == {head(0, 0), head(1, 0), mlp(1), head(2, 0)}
    assert head(1, 1) not in pm.distractors and head(2, 1) in pm.distractors
    with torch.no_grad():
        assert torch.equal(pm.model(dataset.tokens)[:, -1].argmax(-1), dataset.answer_ids)


def test_backup_takes_over_when_the_primary_is_ablated(pm, dataset, means):
    """Raw hooks: the backup attends to the sink when the primary writes, to its own position when the primary
    is mean-ablated; it then restores most of the logit difference, which ablating both loses."""
    pattern = "blocks.2.attn.hook_pattern"
    clean, c_store = _raw(pm, dataset, means, [], [pattern])
    ko, k_store = _raw(pm, dataset, means, [head(1, 0)], [pattern])
    both, _ = _raw(pm, dataset, means, [head(1, 0), head(2, 0)])
    only_backup, _ = _raw(pm, dataset, means, [head(2, 0)])
    last = dataset.tokens.shape[1] - 1
    assert float(c_store[pattern][:, 0, last, last].max()) < 0.01  # clean: (almost) no attention to itself
    assert float(c_store[pattern][:, 0, last, 0].min()) > 0.99  # ... but to the sink
    assert float(k_store[pattern][:, 0, last, last].min()) > 0.9  # primary ablated: its own position
    full = _ld(dataset, clean)
    assert _ld(dataset, only_backup) == pytest.approx(full, rel=0.01)  # the backup does nothing while the primary works
    assert _ld(dataset, ko) > 0.8 * full  # it takes over
    assert _ld(dataset, both) < 0.5 * full  # without it the primary's share is lost
    ab = Ablator(pm.model, pm.info, dataset)
    assert ab.score_ablated([head(1, 0)]) == pytest.approx(_ld(dataset, ko) / full, rel=1e-4)


def test_negative_head_lowers_the_metric(pm, dataset, means):
    clean, store = _raw(pm, dataset, means, [], ["blocks.1.attn.hook_z"])
    ablated, _ = _raw(pm, dataset, means, [head(1, 1)])
    assert _ld(dataset, ablated) > 1.1 * _ld(dataset, clean)  # ablating it raises the logit difference
    w_u = pm.model.W_U
    direction = (w_u[:, dataset.answer_ids] - w_u[:, dataset.incorrect_ids]).T  # [batch, d_model]
    out = store["blocks.1.attn.hook_z"][:, -1, 1] @ pm.model.W_O[1, 1]  # its write at the final position
    assert float((out * direction).sum(-1).max()) < 0  # against the answer on every prompt (before the norm)


def test_logit_distractor_moves_logits_not_the_logit_difference(pm, dataset, means):
    clean, _ = _raw(pm, dataset, means, [])
    ablated, _ = _raw(pm, dataset, means, [head(2, 1)])
    rows = torch.arange(len(dataset))
    moved = (ablated[rows, dataset.answer_ids] - clean[rows, dataset.answer_ids]).abs()
    assert float(moved.max()) > 1.0  # the answer's logit moves by more than a nat on some prompts
    assert abs(_ld(dataset, ablated) / _ld(dataset, clean) - 1) < 0.01  # the difference does not
    p_clean, p_abl = clean.softmax(-1), ablated.softmax(-1)
    assert float((p_clean[rows, dataset.answer_ids] - p_abl[rows, dataset.answer_ids]).abs().max()) > 0.01


def test_knockout_finds_the_backup(pm, dataset, means):
    """Chapter 10's machinery: knocking out the primary raises the backup's direct effect (frozen final-norm
    scale, checked against a raw computation) more than any other head's, and the backup joins the circuit."""
    ab = Ablator(pm.model, pm.info, dataset)
    comp = compensation(pm.model, dataset, ab, [head(1, 0)]).set_index("component")
    assert comp.loc["L2.H0", "dla_clean"] == pytest.approx(0.0, abs=0.05)
    assert comp.loc["L2.H0", "change"] > 5.0
    others = comp[~comp["knocked_out"]]
    assert others["change"].idxmax() == "L2.H0"
    # raw: the backup's write at the final position, read through the clean run's final norm scale
    _, clean = _raw(pm, dataset, means, [], ["ln_final.hook_scale"])
    _, ko = _raw(pm, dataset, means, [head(1, 0)], ["blocks.2.attn.hook_z"])
    out = ko["blocks.2.attn.hook_z"][:, -1, 0] @ pm.model.W_O[2, 0]
    out = out - out.mean(-1, keepdim=True)
    scale = clean["ln_final.hook_scale"][:, -1]  # [batch, 1]
    w = pm.model.ln_final.w if hasattr(pm.model.ln_final, "w") else pm.model.ln_final.weight
    direction = (pm.model.W_U[:, dataset.answer_ids] - pm.model.W_U[:, dataset.incorrect_ids]).T
    raw_dla = float(((out / scale * w) * direction).sum(-1).mean())  # TransformerLens divides by hook_scale
    assert comp.loc["L2.H0", "dla_knockout"] == pytest.approx(raw_dla, rel=1e-3)
    intact = circuit_of(ab, 0.8, minimal=True).components
    knocked = circuit_of(KnockoutAblator(pm.model, pm.info, dataset, [head(1, 0)]), 0.8, minimal=True).components
    assert head(2, 0) not in intact and head(2, 0) in knocked


def test_methods_against_the_planted_circuit(pm):
    table = M.planted_method_table(pm, n_prompts=16, ig_steps=2, eap_ig_steps=2).set_index("method")
    assert list(table.index) == list(M.METHODS)
    sweep = table.loc["sweep"]  # the sweep removes the idle backup first, so it keeps the primary route only
    assert sweep["found"] == "L0.H0 L1.H0 MLP1" and sweep["precision"] == 1.0 and sweep["recall"] == 0.75
    assert not sweep["backup_found"] and not table["negative_found"].any()
    assert table.loc["fast", "roc_auc"] > table.loc["random", "roc_auc"]
    assert table.loc["random", "forward_passes"] == 0
    with pytest.raises(ParameterError, match="valid: sweep, fast, eap-ig, random"):
        M.check_methods(["acdc"])


def test_roc_auc_brute_force():
    scores = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 2.0, "e": 0.0}
    positives = {"a", "d"}
    pairs = [(p, n) for p in positives for n in scores if n not in positives]
    brute = sum(1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs)
    assert roc_auc(scores, positives) == pytest.approx(brute / len(pairs))
    assert roc_auc({"a": 1.0}, {"a"}) != roc_auc({"a": 1.0}, {"a"})  # NaN: no negatives


def test_eap_ig_node_sums_equal_the_edge_sums(pm, dataset):
    ab = Ablator(pm.model, pm.info, dataset)
    edges = P.eap_ig_attributions(ab, ig_steps=2)
    sums = edge_attribution_node_sums(ab, pm.info.components, ig_steps=2)
    for c in pm.info.components:
        brute = sum(a for e, a in edges.items() if c in (e.sender, e.receiver))
        assert sums[c] == pytest.approx(brute, abs=1e-4, rel=1e-4), c
    assert curves.eap_ig_node_scores(ab, ig_steps=2) == pytest.approx({c: -v for c, v in sums.items()}, abs=1e-9)


def test_method_curves_table_and_record_round_trip(pm, dataset):
    discovery = Ablator(pm.model, pm.info, dataset)
    heldout = Ablator(pm.model, pm.info, P.planted_dataset(pm, n=12, seed=1))
    ranked = [M.rank_components(discovery, m, ig_steps=2, eap_ig_steps=1) for m in ("fast", "random")]
    by = M.method_curves(heldout, ranked, fractions=[0.1, 0.5, 1.0])
    rows = M.curve_rows("months", by, ranked)
    assert [r["method"] for r in rows] == ["fast", "random"] and rows[1]["forward_passes"] == 0
    assert rows[0]["cpr"] > rows[1]["cpr"]
    record = example(
        DiscoveryMethods,
        tasks=["months"],
        methods=["fast", "random"],
        table=rows,
        curves={"months": by},
        planted=[row(DiscoveryMethods, "planted", method="fast", precision=1.0, recall=0.75)],
    )
    back = DiscoveryMethods.from_json(record.to_json())
    assert back == record and back.curves["months"]["fast"].cpr == rows[0]["cpr"]
    fixture = discovery_methods()
    assert DiscoveryMethods.from_json(fixture.to_json()) == fixture


def test_method_nulls_p_values_against_a_brute_force_loop(pm, dataset):
    """Each method's CPR / CMD against random rankings: the null values are the random rankings' own curves
    (scored one by one), and the p-values equal counting by hand: CPR upper tail, CMD lower tail."""
    from seqcirc_utils.evaluation.nulls import lower_tail_p

    discovery = Ablator(pm.model, pm.info, dataset)
    heldout = Ablator(pm.model, pm.info, P.planted_dataset(pm, n=12, seed=1))
    fr, n = [0.1, 0.2, 0.5, 1.0], 19
    ranked = [M.rank_components(discovery, m, ig_steps=2, eap_ig_steps=1, seed=3) for m in ("fast", "random")]
    by = M.method_curves(heldout, ranked, fractions=fr)
    nulls = M.method_nulls(heldout, by, n_draws=n, seed=0, draws_per_pass=7, progress=False)
    loop_cpr, loop_cmd = [], []
    for s in range(n):  # brute force: one curve per random ranking, unbatched
        c = curves.faithfulness_curve(heldout, curves.random_scores(pm.info.components, s), "r", fr, signed=False)
        loop_cpr.append(c.cpr)
        loop_cmd.append(c.cmd)
    for method, curve in by.items():
        cpr, cmd = nulls["cpr"][method], nulls["cmd"][method]
        assert cpr.null == pytest.approx(loop_cpr, abs=1e-6) and cmd.null == pytest.approx(loop_cmd, abs=1e-6)
        assert cpr.observed == curve.cpr and cmd.observed == curve.cmd and cpr.n_draws == n
        above = sum(1 for v in loop_cpr if v >= curve.cpr - 1e-9)
        below = sum(1 for v in loop_cmd if v <= curve.cmd + 1e-9)
        assert cpr.p_value == pytest.approx((1 + above) / (n + 1)) == M.claim_p(cpr)
        assert lower_tail_p(cmd) == pytest.approx((1 + below) / (n + 1)) == M.claim_p(cmd)
        assert cpr.n_prompts == 12 and cpr.task == heldout.dataset.spec.task
    # seed 3's random ranking is draw 3 of the null: the same CPR
    assert nulls["cpr"]["random"].observed == pytest.approx(loop_cpr[3], abs=1e-6)
    rows = M.null_rows("months", nulls)
    assert [r["method"] for r in rows] == ["fast", "random"] and rows[0]["cpr_p"] == nulls["cpr"]["fast"].p_value
    with pytest.raises(ParameterError, match="fractions"):
        M.method_nulls(heldout, {"a": by["fast"], "b": M.method_curves(heldout, ranked[:1], [0.5, 1.0])["fast"]}, 2)


def test_findings_paragraph_reads_the_record(tmp_path):
    from seqcirc_utils.core.results import write_json_atomic
    from seqcirc_utils.report.findings import READERS, ChapterStatus, chapter_finding

    reader = next(r for r in READERS if r.notebook == "13_discovery_methods")
    write_json_atomic(tmp_path / DiscoveryMethods.file, discovery_methods())
    text = chapter_finding(
        reader, ChapterStatus("13_discovery_methods", "Which discovery method to trust", True), tmp_path
    )
    assert "could not be summarised" not in text
    assert "months" in text and "fast CPR 0.81" in text and "random CPR 0.54" in text
    assert "recall 0.75" in text and "L2.H0" in text
    assert "Against 99 random rankings on months" in text and "fast CPR p = 0.010, CMD p = 0.010" in text
