"""Null distributions for circuit claims: random circuits matched to the real one, scored exactly like it.

A claim "this circuit keeps the behaviour" is read against what a random circuit of the same make-up keeps
(claims conventions, section 2). :func:`matched_random_circuits` draws such circuits **matched per layer**:

- heads: the same number of heads in every layer as the circuit (drawn without replacement among that
  layer's heads);
- MLPs: as many MLPs as the circuit, each drawn from the layers within ``mlp_window`` (default 1) of one of
  the circuit's MLPs (a random assignment of distinct MLPs; a draw that gets stuck is redrawn).

By default the draws range over every head / MLP of the matched layers, the circuit's own included (the
circuit is one possible draw: an exchangeable null); ``exclude_own=True`` keeps the circuit's components
out (the baseline of an ablation *of* the circuit, e.g. a knockout).

:func:`circuit_null` scores the circuit and ``n_draws`` (default :data:`N_DRAWS` = 99, so ``p`` can reach
0.01) matched draws on one :class:`~seqcirc_utils.scoring.ablation.Ablator`: the same prompts, the same
replacement values (means computed once), the same metric and the same clean run (the full model's logits
and the empty circuit's metric are computed once and shared). A draw costs at most one prompt-batch forward
pass: circuits that leave the first layers intact (e.g. a few heads ablated from the full model) resume from the
clean residual stream entering their first ablated layer; the others can be batched, ``draws_per_pass`` circuits
sharing one forward call (the prompts repeated, one ablation mask per copy). By default
(:data:`DRAWS_PER_PASS` = ``None``) a call holds as many circuits as fill :data:`TOKENS_PER_PASS` prompt tokens:
measured on one CPU thread (SmolLM2), 3 or 4 distinct prompts of 9 tokens cost about half as much per circuit
scored 10 to a call as one at a time, 10 to 12 prompts of 18 tokens about 12 % less 4 to a call, 11 to 24
prompts of 24 to 34 tokens 5 % less at most, and 8 circuits a call of 24 prompts of 34 tokens 1.2x more: the
target batches only the small passes. On a GPU pass more. It returns a :class:`~seqcirc_utils.core.records.NullDistribution` record
(observed value, the null's mean and 5/50/95th percentiles, ``n_draws``, the observed percentile and the
one-sided ``p = (1 + #{null >= observed}) / (n_draws + 1)``).

:func:`sharing_null` asks how much circuits of given sizes overlap by chance: each task's circuit is replaced by
a matched draw (a layer-stratified permutation of membership, :func:`permuted_circuits`), and the components all
circuits keep (and each pair keeps) are counted per permutation: the expected count, its 95 % range and the p
of the observed overlap. Set arithmetic only, no forward pass.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import AblationMode
from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.stats import n_clusters
from seqcirc_utils.core.types import Component, head, mlp, sort_components
from seqcirc_utils.discovery.pipeline import check_faithfulness_baseline
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import Ablator, component_hook_name

N_DRAWS = 99
#: Circuits per batched forward call; ``None``: as many as fill :data:`TOKENS_PER_PASS` prompt tokens (see above).
DRAWS_PER_PASS: int | None = None
#: The prompt tokens (rows x positions) a batched call aims at when ``draws_per_pass`` is ``None`` (at least one
#: circuit a call).
TOKENS_PER_PASS = 256
STATISTICS = ("faithfulness", "score")
MAX_REDRAWS = 1000


# --------------------------------------------------------------------------- drawing matched circuits


def heads_per_layer(circuit: Iterable[Component]) -> dict[int, int]:
    """``{layer: number of heads}`` of ``circuit`` (layers without heads left out)."""
    out: dict[int, int] = {}
    for c in circuit:
        if c.is_head:
            out[c.layer] = out.get(c.layer, 0) + 1
    return dict(sorted(out.items()))


def _draw_mlps(rng: random.Random, layers: Sequence[int], pool: Sequence[Component], window: int) -> list[Component]:
    """Distinct MLPs from ``pool``, one within ``window`` layers of each of ``layers`` (random assignment;
    redrawn when a greedy pass gets stuck). Fewer when no assignment is found in :data:`MAX_REDRAWS` tries."""
    best: list[Component] = []
    for _ in range(MAX_REDRAWS):
        order = list(layers)
        rng.shuffle(order)
        taken: list[Component] = []
        for layer in order:
            options = [m for m in pool if abs(m.layer - layer) <= window and m not in taken]
            if not options:
                break
            taken.append(rng.choice(options))
        if len(taken) == len(layers):
            return taken
        best = max(best, taken, key=len)
    return best


def matched_random_circuits(
    info: ModelInfo,
    circuit: Iterable[Component],
    n_draws: int = N_DRAWS,
    seed: int = 0,
    mlp_window: int = 1,
    exclude_own: bool = False,
) -> list[frozenset[Component]]:
    """``n_draws`` random circuits matched to ``circuit`` per layer (see the module docstring), seeded.

    Heads: in every layer, as many heads as ``circuit`` has there, drawn without replacement from that
    layer's heads (without the circuit's own when ``exclude_own``; fewer when a layer has too few others).
    MLPs: as many as ``circuit`` has, distinct, each within ``mlp_window`` layers of one of the circuit's MLPs.
    Components other than heads and MLPs (neurons) are refused.
    """
    circuit = sort_components(set(circuit))
    if any(not (c.is_head or c.is_mlp) for c in circuit):
        raise ParameterError("matched random circuits are drawn for heads and MLPs only; drop neurons from the circuit")
    if n_draws < 1:
        raise ParameterError(f"n_draws must be >= 1, got {n_draws}")
    if mlp_window < 0:
        raise ParameterError(f"mlp_window must be >= 0 layers, got {mlp_window}")
    for c in circuit:
        info.check(c)
    own = set(circuit)
    rng = random.Random(seed)
    per_layer = heads_per_layer(circuit)
    mlp_layers = [c.layer for c in circuit if c.is_mlp]
    mlp_pool = [m for m in info.mlps if not (exclude_own and m in own)]
    every_head = info.heads
    head_pools = {
        layer: [h for h in every_head if h.layer == layer and not (exclude_own and h in own)] for layer in per_layer
    }
    draws = []
    for _ in range(n_draws):
        drawn: list[Component] = []
        for layer, n in per_layer.items():
            pool = head_pools[layer]
            drawn += rng.sample(pool, min(n, len(pool)))
        drawn += _draw_mlps(rng, mlp_layers, mlp_pool, mlp_window)
        draws.append(frozenset(drawn))
    return draws


def matching_description(circuit: Iterable[Component], mlp_window: int = 1, exclude_own: bool = False) -> dict:
    """What :func:`matched_random_circuits` keeps of ``circuit`` (the record's ``matched``)."""
    circuit = list(circuit)
    return {
        "heads_per_layer": {str(k): v for k, v in heads_per_layer(circuit).items()},
        "n_mlps": sum(c.is_mlp for c in circuit),
        "mlp_layers": sorted(c.layer for c in circuit if c.is_mlp),
        "mlp_window": mlp_window,
        "exclude_own": exclude_own,
    }


# --------------------------------------------------------------------------- batched scoring


def _batched_hook(masks: torch.Tensor, value: torch.Tensor, copies: int, resample: bool) -> Callable:
    """Replace activations ``[copies * n, pos, ...]`` where ``masks`` ``[copies * n, pos, ...]`` is True."""

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ARG001 - TransformerLens signature
        v = value.to(act.device, act.dtype)
        if resample:
            v = v.repeat(copies, *([1] * (v.dim() - 1)))
        return torch.where(masks.to(act.device), v, act)

    return hook


def _masks(ablator: Ablator, kept_sets: Sequence[frozenset[Component]], n: int) -> dict[str, torch.Tensor]:
    """Per hook point, a boolean mask ``[len(kept_sets) * n, pos, n_heads, 1]`` (heads) or
    ``[len(kept_sets) * n, pos, 1]`` (MLPs): True where the copy's circuit ablates the component."""
    info, seq = ablator.info, ablator.seq_len
    pos = torch.zeros(seq, dtype=torch.bool)
    pos[slice(None) if ablator.positions is None else ablator.positions] = True
    out: dict[str, torch.Tensor] = {}
    for layer in range(info.n_layers):
        head_rows = torch.ones(len(kept_sets), info.n_heads, dtype=torch.bool)
        mlp_rows = torch.ones(len(kept_sets), dtype=torch.bool)
        for i, kept in enumerate(kept_sets):
            for c in kept:
                if c.layer == layer and c.is_head:
                    head_rows[i, c.index] = False
                elif c.layer == layer and c.is_mlp:
                    mlp_rows[i] = False
        if any(h.layer == layer for h in info.heads):
            z = component_hook_name(head(layer, 0))
            m = head_rows[:, None, None, :] & pos[None, None, :, None]  # [sets, 1, pos, n_heads]
            out[z] = m.expand(len(kept_sets), n, seq, info.n_heads).reshape(-1, seq, info.n_heads)[..., None]
        if any(m.layer == layer for m in info.mlps):
            mlp_name = component_hook_name(mlp(layer))
            m = mlp_rows[:, None, None] & pos[None, None, :]  # [sets, 1, pos]
            out[mlp_name] = m.expand(len(kept_sets), n, seq).reshape(-1, seq)[..., None]
    return out


def circuit_metric_values(
    ablator: Ablator,
    kept_sets: Sequence[Iterable[Component]],
    draws_per_pass: int | None = DRAWS_PER_PASS,
    progress: bool = False,
    desc: str = "scoring circuits",
) -> torch.Tensor:
    """Per-prompt metric of each circuit in ``kept_sets`` (everything else ablated, the ablator's mode,
    values, positions and metric), ``[len(kept_sets), n_prompts]``.

    ``draws_per_pass`` circuits share one batched forward call (the prompts repeated once per circuit, one
    ablation mask per copy; ``None``: :func:`circuits_per_call`); each circuit costs one prompt-batch pass,
    counted on ``ablator.forward_passes``.
    Equals :meth:`Ablator.score_parts`'s numerator circuit by circuit.

    With replacement values that do not depend on the prompt (``mean``, ``zero``), prompts with identical
    tokens (e.g. a template without fillers, several prompts per sequence) give identical logits: only the
    distinct token rows are run and their logits copied back to every prompt (equal up to float rounding; the
    pass count is the same). ``resample`` runs every prompt (each has its own corrupted partner).
    """
    if draws_per_pass is not None and draws_per_pass < 1:
        raise ParameterError(
            f"draws_per_pass must be >= 1 (or None: fill {TOKENS_PER_PASS} tokens), got {draws_per_pass}"
        )
    kept_sets = [frozenset(k) for k in kept_sets]
    n = len(ablator.dataset)
    names = sorted({component_hook_name(c) for c in ablator.info.components})
    ablator.ensure_values(names)
    if kept_sets and first_ablated_layer(ablator.info, kept_sets) > 0:
        return _resumed_metric_values(ablator, kept_sets, progress, desc)
    resample = ablator.mode is AblationMode.RESAMPLE
    rows, inverse = distinct_rows(ablator.tokens, keep_all=resample)
    m = len(rows)
    per_call = circuits_per_call(rows.numel()) if draws_per_pass is None else draws_per_pass
    out = []
    chunks = range(0, len(kept_sets), per_call)
    for start in tqdm(chunks, desc=desc, disable=not progress, leave=False):
        chunk = kept_sets[start : start + per_call]
        masks = _masks(ablator, chunk, m)
        hooks = [(name, _batched_hook(masks[name], ablator.values[name], len(chunk), resample)) for name in names]
        tokens = rows.repeat(len(chunk), 1)
        logits = final_logits(ablator.model, tokens, batch_size=len(tokens), fwd_hooks=hooks)
        ablator.forward_passes += len(chunk)
        out += [ablator.metric_values(logits[i * m : (i + 1) * m][inverse]) for i in range(len(chunk))]
    return torch.stack(out) if out else torch.zeros(0, n)


def circuits_per_call(n_tokens: int, tokens_per_pass: int = TOKENS_PER_PASS) -> int:
    """How many circuits one batched call scores when each needs ``n_tokens`` prompt tokens (its distinct rows x
    positions): as many as fill ``tokens_per_pass`` tokens, at least one."""
    if n_tokens < 1:
        raise ParameterError(f"a batched pass needs at least one prompt token, got {n_tokens}")
    return max(1, tokens_per_pass // n_tokens)


def first_ablated_layer(info: ModelInfo, kept_sets: Sequence[frozenset[Component]]) -> int:
    """The lowest layer any of ``kept_sets`` ablates a component in (``info.n_layers`` when none ablates any):
    the blocks below it run as in the clean model for every set."""
    return min(
        (c.layer for kept in kept_sets for c in info.components if c not in kept),
        default=info.n_layers,
    )


def _resumed_metric_values(
    ablator: Ablator, kept_sets: Sequence[frozenset[Component]], progress: bool, desc: str
) -> torch.Tensor:
    """:func:`circuit_metric_values` for circuits that all keep every component below layer ``L > 0``: each
    circuit's pass starts from the clean ``resid_pre`` of block ``L`` ``[n_prompts, pos, d_model]`` (computed
    once per ablator), one partial prompt-batch pass per circuit (counted)."""
    info = ablator.info
    start = first_ablated_layer(info, kept_sets)
    resid = ablator.clean_residuals()[start] if start < info.n_layers else None
    out = []
    for kept in tqdm(kept_sets, desc=desc, disable=not progress, leave=False):
        ablated = [c for c in info.components if c not in kept]
        if resid is None:  # nothing ablated: the clean logits
            logits = ablator.logits([])
        else:
            with ablator.model.hooks(fwd_hooks=ablator.hooks(ablated)):
                logits = ablator.unembed_final(ablator.run_blocks(start, info.n_layers, resid))
        out.append(ablator.metric_values(logits))
    return torch.stack(out)


def distinct_rows(tokens: torch.Tensor, keep_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, inverse)``: the distinct rows of ``tokens`` ``[n, pos]`` in first-seen order and, per prompt, the
    index of its row (``rows[inverse] == tokens``). ``keep_all``: every row as it is (``inverse = arange(n)``)."""
    n = tokens.shape[0]
    if keep_all:
        return tokens, torch.arange(n, device=tokens.device)
    first: dict[tuple[int, ...], int] = {}  # row -> its index among the distinct rows
    where: list[int] = []  # distinct row -> the first prompt that has it
    inverse = []
    for i, row in enumerate(tokens.tolist()):
        j = first.setdefault(tuple(row), len(first))
        if j == len(where):
            where.append(i)
        inverse.append(j)
    rows = tokens[where]
    return rows, torch.tensor(inverse, dtype=torch.long, device=tokens.device)


def statistic_of(ablator: Ablator, circuit_values: torch.Tensor, statistic: str) -> torch.Tensor:
    """The dataset-level statistic of per-prompt circuit metrics ``[..., n_prompts]`` -> ``[...]``:
    ``"faithfulness"`` = (mean m(C) - mean m(empty)) / (mean m(full) - mean m(empty)); ``"score"`` =
    :meth:`Ablator.fraction_of_full` of mean m(C) (m(C) / m(full); for KL 1 - KL(C) / KL(empty))."""
    means = circuit_values.double().mean(-1)
    if statistic == "faithfulness":
        empty = float(ablator.empty_values().double().mean())
        full = float(ablator.metric_values(ablator.full_logits).double().mean())
        return (means - empty) / (full - empty)
    if statistic == "score":
        return torch.tensor([ablator.fraction_of_full(float(m)) for m in means.flatten()], dtype=torch.float64).reshape(
            means.shape
        )
    raise ParameterError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")


# --------------------------------------------------------------------------- summary and the helper


def null_summary(observed: float, null: Sequence[float]) -> dict:
    """Observed value against null draws: ``{"null_mean", "null_p5", "null_p50", "null_p95",
    "observed_percentile", "p_value", "n_draws"}`` (percentiles by linear interpolation; the observed
    percentile is the mid-rank 100 * (#{null < obs} + #{null == obs} / 2) / n; the one-sided
    p = (1 + #{null >= obs}) / (n + 1))."""
    values = np.asarray(list(null), dtype=float)
    if values.size == 0:
        raise ParameterError("a null summary needs at least one draw")
    below, equal = int((values < observed).sum()), int((values == observed).sum())
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {
        "null_mean": float(values.mean()),
        "null_p5": float(p5),
        "null_p50": float(p50),
        "null_p95": float(p95),
        "observed_percentile": 100.0 * (below + equal / 2) / values.size,
        "p_value": (1 + int((values >= observed).sum())) / (values.size + 1),
        "n_draws": int(values.size),
    }


def lower_tail_p(null: NullDistribution) -> float:
    """The one-sided p-value for an observed value *below* its null, ``(1 + #{null <= observed}) / (n_draws + 1)``:
    the test of an ablation claim ("removing these components costs more than removing random ones"), where
    ``null`` scores what is *kept* (e.g. every component but the ablated ones, against every component but a
    matched random set). The record's own ``p_value`` is the upper tail."""
    values = np.asarray(null.null, dtype=float)
    return (1 + int((values <= null.observed).sum())) / (values.size + 1)


def circuit_null(
    ablator: Ablator,
    circuit: Iterable[Component],
    n_draws: int = N_DRAWS,
    seed: int = 0,
    statistic: str = "faithfulness",
    mlp_window: int = 1,
    exclude_own: bool = False,
    draws_per_pass: int | None = DRAWS_PER_PASS,
    progress: bool = True,
    description: str = "",
) -> NullDistribution:
    """The circuit's ``statistic`` against ``n_draws`` matched random circuits on ``ablator``'s data.

    Draws: :func:`matched_random_circuits` (``seed``, ``mlp_window``, ``exclude_own``). The circuit and
    every draw are scored by :func:`circuit_metric_values` (``draws_per_pass`` per batched call), with the
    ablator's means, metric and clean run; ``statistic`` is ``"faithfulness"`` (default; refused like a
    circuit record's, :func:`~seqcirc_utils.discovery.pipeline.check_faithfulness_baseline`) or ``"score"``
    (the paper's ratio). Percentile and p-value do not depend on which (both increase with m(C)).
    Cost: ``n_draws + 1`` prompt-batch passes (+1 for the empty circuit, once per ablator).
    """
    if statistic not in STATISTICS:
        raise ParameterError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
    circuit = sort_components(set(circuit))
    draws = matched_random_circuits(ablator.info, circuit, n_draws, seed, mlp_window, exclude_own)
    t0, p0 = time.perf_counter(), ablator.forward_passes
    if statistic == "faithfulness":
        check_faithfulness_baseline(ablator)
    values = circuit_metric_values(
        ablator, [frozenset(circuit)] + draws, draws_per_pass, progress, desc=f"{n_draws} matched random circuits"
    )
    stats = statistic_of(ablator, values, statistic).tolist()
    observed, null = float(stats[0]), [float(v) for v in stats[1:]]
    spec = ablator.dataset.spec
    return NullDistribution(
        statistic=statistic,
        observed=observed,
        **null_summary(observed, null),
        matched=matching_description(circuit, mlp_window, exclude_own),
        seed=seed,
        null=null,
        circuit=[str(c) for c in circuit],
        task=spec.task,
        metric=ablator.metric,
        ablation=ablator.mode.value,
        n_prompts=len(ablator.dataset),
        n_clusters=n_clusters(ablator.dataset.sequence_ids),
        forward_passes=ablator.forward_passes - p0,
        seconds=time.perf_counter() - t0,
        description=description,
    )


# --------------------------------------------------------------------------- the overlap expected by chance

#: The ``group`` of a :func:`sharing_null` row: the components every circuit keeps, or one pair's intersection.
SHARED_BY_ALL, PAIR = "all", "pair"
#: The central range of a sharing null (lower and upper percentiles of the permutation counts).
SHARING_RANGE = (2.5, 97.5)


def _only_kind(components: Iterable[Component], kind: str | None) -> frozenset[Component]:
    if kind not in (None, "head", "mlp"):
        raise ParameterError(f"unknown component kind {kind!r}; valid: head, mlp (or None for both)")
    return frozenset(c for c in components if kind is None or c.kind == kind)


def sharing_summary(observed: float, null: Sequence[float]) -> dict:
    """An observed overlap against its permutation counts: ``{"observed", "expected"`` (the counts' mean),
    ``"null_lo", "null_hi"`` (their 2.5th and 97.5th percentiles, taken as order statistics: the count below
    and above), ``"percentile"`` (mid-rank, as :func:`null_summary`), ``"p"`` = (1 + #{null >= observed}) /
    (n + 1), ``"n_permutations"}``."""
    values = np.asarray(list(null), dtype=float)
    if values.size == 0:
        raise ParameterError("a sharing null needs at least one permutation")
    below, equal = int((values < observed).sum()), int((values == observed).sum())
    return {
        "observed": observed,
        "expected": float(values.mean()),
        "null_lo": float(np.percentile(values, SHARING_RANGE[0], method="lower")),
        "null_hi": float(np.percentile(values, SHARING_RANGE[1], method="higher")),
        "percentile": 100.0 * (below + equal / 2) / values.size,
        "p": (1 + int((values >= observed).sum())) / (values.size + 1),
        "n_permutations": int(values.size),
    }


def permuted_circuits(
    info: ModelInfo,
    circuits: Mapping[str, Iterable[Component]],
    n_permutations: int = N_DRAWS,
    seed: int = 0,
    mlp_window: int = 1,
) -> dict[str, list[frozenset[Component]]]:
    """``{task: n_permutations random circuits}``: every circuit's membership permuted within its layers, i.e.
    :func:`matched_random_circuits` of each (task ``i`` of ``circuits`` with seed ``seed + i``), independently
    across tasks: the same number of heads in every layer, as many MLPs each within ``mlp_window`` layers of one
    of the circuit's; the circuit's own components may be drawn."""
    if n_permutations < 1:
        raise ParameterError(f"n_permutations must be >= 1, got {n_permutations}")
    return {
        t: matched_random_circuits(info, circuits[t], n_permutations, seed + i, mlp_window)
        for i, t in enumerate(circuits)
    }


def sharing_null(
    info: ModelInfo,
    circuits: Mapping[str, Iterable[Component]],
    n_permutations: int = N_DRAWS,
    seed: int = 0,
    mlp_window: int = 1,
    kind: str | None = None,
    pairs: bool = True,
) -> list[dict]:
    """The overlap of circuits of these sizes expected by chance: a layer-stratified permutation of membership.

    Each of ``n_permutations`` permutations replaces every circuit of ``circuits`` (``{task: components}``, two or
    more) by an independent random circuit matched to it per layer (:func:`permuted_circuits`: the same number
    of heads in every layer, as many MLPs each within ``mlp_window`` layers of one of the circuit's) and counts the components
    every circuit keeps and, with ``pairs``, those each pair keeps (``kind="head"`` or ``"mlp"``: that kind only).
    No forward pass: set arithmetic only.

    Returns one row for the components shared by all (``group`` :data:`SHARED_BY_ALL`, ``a``/``b`` None) and
    one per pair (``group`` :data:`PAIR`), each ``{"group", "a", "b", "tasks"`` (names joined by ``" & "``),
    ``"kind"`` and :func:`sharing_summary`'s keys: observed count, expected count, its 95 % range, percentile,
    p of observed >= null``}``.
    """
    names = list(circuits)
    if len(names) < 2:
        raise ParameterError(f"a sharing null compares two or more circuits, got {len(names)}")
    full = {t: frozenset(circuits[t]) for t in names}
    own = {t: _only_kind(full[t], kind) for t in names}
    permuted = permuted_circuits(info, full, n_permutations, seed, mlp_window)
    drawn = {t: [_only_kind(d, kind) for d in permuted[t]] for t in names}
    groups: list[tuple[str, str | None, str | None, list[str]]] = [(SHARED_BY_ALL, None, None, names)]
    if pairs:
        groups += [(PAIR, a, b, [a, b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = []
    for group, a, b, members in groups:
        observed = len(frozenset.intersection(*(own[t] for t in members)))
        null = [len(frozenset.intersection(*(drawn[t][k] for t in members))) for k in range(n_permutations)]
        rows.append(
            {"group": group, "a": a, "b": b, "tasks": " & ".join(members), "kind": kind or "all"}
            | sharing_summary(observed, null)
        )
    return rows
