"""Which discovery method to trust: every node-ranking method's faithfulness curve on held-out prompts, and
each method against a planted circuit with a backup, a negative head and a logit distractor (chapter 13).

**Rankings** (:func:`rank_components`), each chosen on the *discovery* split, in :data:`METHODS`:

- ``sweep``: the paper's pruning sweep at ``threshold``; score = removal order
  (:func:`~seqcirc_utils.evaluation.curves.removal_order_scores`, unsigned);
- ``fast``: the fast method's attribution ranking (integrated gradients towards the all-ablated model,
  :func:`~seqcirc_utils.evaluation.curves.attribution_node_scores`);
- ``eap-ig``: EAP-IG node scores, the summed attributions of every edge a node sends or receives
  (:func:`~seqcirc_utils.evaluation.curves.eap_ig_node_scores`);
- ``random``: a seeded random ranking (unsigned).

**Curves** (:func:`method_curves`): each ranking's faithfulness curve on the *held-out* split's ablator
(:func:`~seqcirc_utils.evaluation.curves.faithfulness_curve`, MIB's CPR and CMD, linear and log k). The cost of
a method is its ranking's forward passes on the discovery split (a backward pass counted as a forward pass,
as the package's counters do); the curve's passes are the same for every method and reported apart.

**Against random rankings** (:func:`method_nulls`): each method's CPR and CMD on the held-out split against
those of ``n_draws`` seeded random rankings (:func:`~seqcirc_utils.evaluation.curves.random_ranking_areas`,
seeds ``0 .. n_draws - 1``, the same prompts, means and fractions) as
:class:`~seqcirc_utils.core.records.NullDistribution` records (statistic ``"cpr"`` / ``"cmd"``; the record's
``p_value`` is the upper tail ``(1 + #{null >= observed}) / (n + 1)``, the claim for CPR; for CMD, lower is
better: :func:`~seqcirc_utils.evaluation.nulls.lower_tail_p`). The ``random`` method's ranking (seed ``seed``)
is itself one of the draws when ``seed < n_draws``: its p is a check, not a claim.

**Ground truth** (:func:`planted_method_table`): on the backup planted model
(:func:`~seqcirc_utils.evaluation.planted.build_backup_planted_model`) each method's found set (the sweep's
and the fast method's circuits at ``threshold``; EAP-IG's and random's top ``len(planted)`` nodes) against
the planted circuit (precision, recall), whether it holds the backup, the negative head and the logit
distractor, and the ROC AUC of its scores against the planted set
(:func:`~seqcirc_utils.core.stats.roc_auc`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.records import FaithfulnessCurve, NullDistribution
from seqcirc_utils.core.stats import n_clusters, roc_auc
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.discovery.pruning import prune
from seqcirc_utils.evaluation import curves as C
from seqcirc_utils.evaluation.nulls import DRAWS_PER_PASS, N_DRAWS, lower_tail_p, null_summary
from seqcirc_utils.evaluation.planted import PlantedModel, planted_dataset, precision_recall
from seqcirc_utils.scoring.ablation import Ablator

METHODS = ("sweep", "fast", "eap-ig", "random")
#: Whether a method's scores carry a sign (the CMD curve then ranks by |score|).
SIGNED = {"sweep": False, "fast": True, "eap-ig": True, "random": False}


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` as a list; a :class:`ParameterError` naming :data:`METHODS` for an unknown one."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ParameterError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    return list(methods)


@dataclass
class Ranking:
    """One method's scores of every component, and what they cost (``found``: the method's own circuit when
    it builds one, else None)."""

    method: str
    scores: dict[Component, float]
    signed: bool
    forward_passes: int
    seconds: float
    found: frozenset[Component] | None = None


def rank_components(
    ablator: Ablator,
    method: str,
    *,
    threshold: float = 0.8,
    ig_steps: int = 3,
    eap_ig_steps: int = 3,
    seed: int = 0,
) -> Ranking:
    """Score every head and MLP of ``ablator``'s model by ``method`` on ``ablator``'s data (see the module
    docstring); the passes are counted on ``ablator``."""
    check_methods([method])
    t0, p0 = time.perf_counter(), ablator.forward_passes
    components = list(ablator.info.components)
    found = None
    if method == "sweep":
        results = prune(ablator, [threshold], method="sweep", progress=False)
        scores = C.removal_order_scores(results, components)
        found = results[-1].components
    elif method == "fast":
        scores = C.attribution_node_scores(ablator, ig_steps=ig_steps)
    elif method == "eap-ig":
        scores = C.eap_ig_node_scores(ablator, ig_steps=eap_ig_steps)
    else:
        scores = C.random_scores(components, seed=seed)
    return Ranking(method, scores, SIGNED[method], ablator.forward_passes - p0, time.perf_counter() - t0, found)


def method_curves(
    heldout: Ablator,
    rankings: Sequence[Ranking],
    fractions: Sequence[float] = C.FRACTIONS,
    seed: int | None = None,
) -> dict[str, FaithfulnessCurve]:
    """``{method: faithfulness curve}`` of each ranking on the held-out ablator; each curve's ``description``
    names the ranking's cost (``ranking passes N``)."""
    out = {}
    for r in rankings:
        out[r.method] = C.faithfulness_curve(
            heldout,
            r.scores,
            r.method,
            fractions=fractions,
            signed=r.signed,
            seed=seed,
            description=f"ranking chosen on the discovery split; ranking passes {r.forward_passes}",
        )
    return out


def curve_rows(task: str, curves: Mapping[str, FaithfulnessCurve], rankings: Sequence[Ranking]) -> list[dict]:
    """One row per method: ``task, method, cpr, cmd, cpr_log, cmd_log, forward_passes`` (the ranking's, on
    the discovery split), ``curve_passes``, ``seconds`` (ranking and curve), ``n_prompts`` (held out)."""
    rows = []
    for r in rankings:
        c = curves[r.method]
        rows.append(
            {
                "task": task,
                "method": r.method,
                "cpr": c.cpr,
                "cmd": c.cmd,
                "cpr_log": c.cpr_log,
                "cmd_log": c.cmd_log,
                "forward_passes": r.forward_passes,
                "curve_passes": c.forward_passes,
                "seconds": r.seconds + c.seconds,
                "n_prompts": c.n_prompts,
            }
        )
    return rows


#: The curve statistics compared with random rankings, and whether higher is better.
NULL_STATISTICS = {"cpr": True, "cmd": False}


def method_nulls(
    heldout: Ablator,
    curves: Mapping[str, FaithfulnessCurve],
    n_draws: int = N_DRAWS,
    seed: int = 0,
    draws_per_pass: int | None = DRAWS_PER_PASS,
    progress: bool = True,
) -> dict[str, dict[str, NullDistribution]]:
    """``{"cpr" | "cmd": {method: NullDistribution}}``: each curve's CPR and CMD (measured on ``heldout``)
    against ``n_draws`` random rankings' on the same ablator (seeds ``seed .. seed + n_draws - 1``; see the
    module docstring). Every method shares the draws; each record's ``forward_passes`` and ``seconds`` are
    the draws' (spent once per ablator, not once per method)."""
    if not curves:
        return {stat: {} for stat in NULL_STATISTICS}
    fractions = {tuple(c.fractions) for c in curves.values()}
    if len(fractions) != 1:
        raise ParameterError(f"the curves must share their fractions to share one null, got {sorted(fractions)}")
    (fr,) = fractions
    t0, p0 = time.perf_counter(), heldout.forward_passes
    draws = C.random_ranking_areas(heldout, n_draws, fr, seed=seed, draws_per_pass=draws_per_pass, progress=progress)
    passes, seconds = heldout.forward_passes - p0, time.perf_counter() - t0
    spec = heldout.dataset.spec
    out: dict[str, dict[str, NullDistribution]] = {}
    for stat, higher in NULL_STATISTICS.items():
        null = [float(d[stat]) for d in draws]
        out[stat] = {}
        for method, curve in curves.items():
            observed = float(getattr(curve, stat))
            out[stat][method] = NullDistribution(
                statistic=stat,
                observed=observed,
                **null_summary(observed, null),
                matched={
                    "null": "random rankings",
                    "seeds": [seed, seed + n_draws - 1],
                    "fractions": list(fr),
                    "higher_is_better": higher,
                },
                seed=seed,
                null=null,
                circuit=[],
                task=spec.task,
                metric=heldout.metric,
                ablation=heldout.mode.value,
                n_prompts=len(heldout.dataset),
                n_clusters=n_clusters(heldout.dataset.sequence_ids),
                forward_passes=passes,
                seconds=seconds,
                description=f"{method}'s {stat} on the held-out split against {n_draws} random rankings' "
                f"({'upper' if higher else 'lower'} tail is the claim)",
            )
    return out


def claim_p(null: NullDistribution) -> float:
    """The one-sided p of the claim "this ranking beats random rankings": the record's upper-tail ``p_value``
    for CPR (higher is better), :func:`~seqcirc_utils.evaluation.nulls.lower_tail_p` for CMD (lower is better)."""
    if null.statistic not in NULL_STATISTICS:
        raise ParameterError(f"unknown curve statistic {null.statistic!r}; valid: {', '.join(NULL_STATISTICS)}")
    return null.p_value if NULL_STATISTICS[null.statistic] else lower_tail_p(null)


def null_rows(task: str, nulls: Mapping[str, Mapping[str, NullDistribution]]) -> list[dict]:
    """One row per method: ``task, method, cpr, cpr_null_mean, cpr_null_p95, cpr_p, cmd, cmd_null_mean,
    cmd_null_p5, cmd_p, n_draws`` (``*_p``: :func:`claim_p`, the tail in which the method beats random)."""
    rows = []
    for method, cpr in nulls.get("cpr", {}).items():
        cmd = nulls["cmd"][method]
        rows.append(
            {
                "task": task,
                "method": method,
                "cpr": cpr.observed,
                "cpr_null_mean": cpr.null_mean,
                "cpr_null_p95": cpr.null_p95,
                "cpr_p": claim_p(cpr),
                "cmd": cmd.observed,
                "cmd_null_mean": cmd.null_mean,
                "cmd_null_p5": cmd.null_p5,
                "cmd_p": claim_p(cmd),
                "n_draws": cpr.n_draws,
            }
        )
    return rows


def planted_method_table(
    pm: PlantedModel,
    methods: Sequence[str] = METHODS,
    threshold: float = 0.8,
    n_prompts: int = 24,
    seed: int = 0,
    ig_steps: int = 3,
    eap_ig_steps: int = 3,
) -> pd.DataFrame:
    """Each method on the planted model (mean ablation, logit difference): one row per method with
    ``method, found, n_found, precision, recall`` (against ``pm.planted``), ``backup_found, negative_found,
    logit_distractor_found`` (whether the found set holds the components of those roles), ``roc_auc`` (its
    scores against the planted set; the sweep's removal order is a score too), ``forward_passes``, ``score``
    (the found set's fraction of the full logit difference)."""
    methods = check_methods(methods)
    ds = planted_dataset(pm, n=n_prompts, seed=seed)
    rows = []
    k = len(pm.planted)
    for method in methods:
        ab = Ablator(pm.model, pm.info, ds, mode="mean", metric="logit_diff")
        r = rank_components(ab, method, threshold=threshold, ig_steps=ig_steps, eap_ig_steps=eap_ig_steps, seed=seed)
        if method == "fast":
            p0 = ab.forward_passes
            found = prune(ab, [threshold], method="fast", progress=False)[0].components
            r.forward_passes += ab.forward_passes - p0
        elif r.found is not None:
            found = r.found
        else:
            found = frozenset(C.ranked(r.scores)[:k])
        precision, recall = precision_recall(found, pm.planted)
        row = {
            "method": method,
            "found": " ".join(map(str, sort_components(found))),
            "n_found": len(found),
            "precision": precision,
            "recall": recall,
        }
        for role in ("backup", "negative", "logit distractor"):
            members = pm.with_role(role)
            row[f"{role.replace(' ', '_')}_found"] = bool(members) and all(c in found for c in members)
        row |= {
            "roc_auc": roc_auc(r.scores, pm.planted),
            "forward_passes": r.forward_passes,
            "score": ab.score(found).score,
        }
        rows.append(row)
    return pd.DataFrame(rows)
