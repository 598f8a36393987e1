"""Edges of a node circuit: the exact path-patching mechanism.

**Edges.** Senders are attention heads and MLPs; receivers are a head's query, key and value
inputs (three separate receivers), an MLP's input and the final residual stream read by the
unembedding (``"logits"``). Every sender writes into the residual stream, so an edge joins any
sender to any receiver downstream of it, adjacent layers or not: a head at layer ``l`` sends to
the MLP of layer ``l`` and to heads/MLPs of layers ``> l``; an MLP at ``l`` sends to layers ``> l``;
everything sends to the logits. The embedding is not a sender node (node pruning never ablates
it, so its edges are always kept).

**Removing an edge** ``s -> (r, input)`` changes the receiver's input by exactly the sender's
change along the direct residual path and nothing else: with ``out_s`` the sender's residual
contribution (head: ``z_s @ W_O[s]`` ``[batch, pos, d_model]``; MLP: ``mlp_out``) and ``val_s`` its
ablated value (the :class:`~seqcirc_utils.scoring.ablation.Ablator`'s replacement, per-position corrupted
mean by default, so edge and node pruning ablate alike), the receiver reads
``resid + (val_s - out_s)`` instead of ``resid`` *on that input only* (the residual stream itself,
the other receivers and, for a head, its other inputs and the other query heads sharing its
key/value head are untouched). The receiver's changed output then flows on to the logits through
the rest of the circuit. Components outside the node circuit stay ablated throughout. Several
removed edges compose in one forward pass: ``out_s`` is always the sender's output in that pass.
Removing every outgoing edge of a component is the same as ablating it.

How each receiver is patched (bridge hook names):

- logits: ``ln_final.hook_in`` (the final norm's input; nothing else reads it);
- MLP ``L``: ``blocks.L.ln2.hook_in`` (the MLP norm's input; the residual stream is unchanged);
- head ``(L, h)`` input ``X`` in q/k/v: grouped-query attention shares keys and values between
  query heads, so the input cannot be patched in place. Before block ``L`` runs (a forward
  pre-hook on the block), the block is run again on the patched residual ``resid + delta`` ("side
  runs", with every hook of this module passive) with the other two of q/k/v taken from an
  unpatched side run at ``blocks.L.attn.hook_q/k/v``; head ``h``'s output ``z`` from that side run
  then replaces the ``h`` slice of ``blocks.L.attn.hook_z`` in the main pass. The model's own code
  computes norm, projections, rotary embedding, mask and softmax, so nothing is re-implemented.

Every hook lives in a context manager: removed on exit, also on errors.

Scores are fractions of the full model's metric (:meth:`Ablator.fraction_of_full`), as in node
pruning. Built on this mechanism: edge attribution patching (EAP, EAP-IG) in
:mod:`seqcirc_utils.discovery.edges.attribution`, and the search for an edge circuit (iterative edge pruning,
its faithfulness and the end-to-end driver) in :mod:`seqcirc_utils.discovery.edges.search`. This module
imports neither.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import HEAD_INPUTS, EdgeInput
from seqcirc_utils.core.types import Component, parse_component, sort_components
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import Ablator

LOGITS = EdgeInput.LOGITS.value
INPUTS = EdgeInput.values()


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class Edge:
    """One edge: ``sender`` (head or MLP) -> ``receiver``'s ``input``.

    ``receiver`` is ``None`` for the logits (``input="logits"``); a head receiver has input
    ``"q"``, ``"k"`` or ``"v"``; an MLP receiver has input ``"mlp"``.
    """

    sender: Component
    receiver: Component | None
    input: str

    @property
    def receiver_name(self) -> str:
        return LOGITS if self.receiver is None else str(self.receiver)

    def __str__(self) -> str:
        tail = "" if self.input in ("mlp", LOGITS) else f".{self.input}"
        return f"{self.sender}->{self.receiver_name}{tail}"

    def to_dict(self, score: float | None = None) -> dict:
        """``{"sender", "receiver", "input", "score"}`` (component strings, score a float or None)."""
        return {
            "sender": str(self.sender),
            "receiver": self.receiver_name,
            "input": self.input,
            "score": None if score is None else float(score),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Edge:
        rec = d["receiver"]
        return cls(parse_component(d["sender"]), None if rec == LOGITS else parse_component(rec), d["input"])


def edge(sender: Component | str, receiver: Component | str | None, input: str | None = None) -> Edge:
    """Build an :class:`Edge` from components or strings; ``input`` defaults to ``"mlp"``/``"logits"``."""
    s = parse_component(sender) if isinstance(sender, str) else sender
    if receiver is None or receiver == LOGITS:
        return Edge(s, None, input or LOGITS)
    r = parse_component(receiver) if isinstance(receiver, str) else receiver
    if input is None:
        if r.is_head:
            raise ParameterError(f"edge into head {r} needs input in {', '.join(HEAD_INPUTS)}")
        input = "mlp"
    return Edge(s, r, input)


def check_edge(info: ModelInfo, e: Edge) -> None:
    """Raise :class:`ParameterError` (listing the valid values) unless ``e`` is a valid edge of the model."""
    if e.sender.kind not in ("head", "mlp"):
        raise ParameterError(f"edge sender {e.sender} must be a head or an MLP (neurons are not edge nodes)")
    info.check(e.sender)
    if e.receiver is None:
        if e.input != LOGITS:
            raise ParameterError(f"an edge into the logits has input 'logits', not {e.input!r}")
        return
    info.check(e.receiver)
    if e.receiver.is_head:
        if e.input not in HEAD_INPUTS:
            raise ParameterError(f"edge into head {e.receiver}: input {e.input!r}; valid: {', '.join(HEAD_INPUTS)}")
    elif e.receiver.is_mlp:
        if e.input != "mlp":
            raise ParameterError(f"edge into {e.receiver}: input {e.input!r}; valid: mlp")
    else:
        raise ParameterError(f"edge receiver {e.receiver} must be a head, an MLP or 'logits'")
    if not is_upstream(e.sender, e.receiver):
        raise ParameterError(
            f"{e.sender} is not upstream of {e.receiver}: a head at layer l sends to MLP l and "
            "layers > l, an MLP at layer l to layers > l"
        )


def is_upstream(sender: Component, receiver: Component | None) -> bool:
    """Whether ``sender``'s output reaches ``receiver``'s input through the residual stream."""
    if receiver is None:
        return True
    if sender.is_head and receiver.is_mlp:
        return receiver.layer >= sender.layer
    return receiver.layer > sender.layer


def receiver_order(components: Iterable[Component]) -> list[tuple[Component | None, str]]:
    """Receivers from the logits backward: logits, then per layer (last first) its MLP, then its
    heads (highest index first), each head's inputs q, k, v."""
    out: list[tuple[Component | None, str]] = [(None, LOGITS)]
    for c in reversed(sort_components(components)):
        if c.is_mlp:
            out.append((c, "mlp"))
        elif c.is_head:
            out += [(c, x) for x in HEAD_INPUTS]
    return out


def circuit_edges(info: ModelInfo, components: Iterable[Component]) -> list[Edge]:
    """Every edge between the heads/MLPs of ``components`` (and into the logits), in pruning order:
    receivers from the logits backward (:func:`receiver_order`), senders nearest-first."""
    comps = [c for c in sort_components(set(components)) if c.kind in ("head", "mlp")]
    for c in comps:
        info.check(c)
    senders = list(reversed(comps))
    return [Edge(s, r, x) for r, x in receiver_order(comps) for s in senders if is_upstream(s, r)]


def check_components(info: ModelInfo, components: Iterable[Component]) -> frozenset[Component]:
    """The node circuit ``components`` as a frozenset, after checking each is a head or MLP of the model.

    Raises :class:`ParameterError` naming the offending component otherwise (edge circuits are built on
    heads and MLPs only; neurons and the embedding are not edge nodes).
    """
    comps = frozenset(components)
    for c in comps:
        info.check(c)
        if c.kind not in ("head", "mlp"):
            raise ParameterError(f"edge circuits are built on heads and MLPs; got {c} (kind {c.kind})")
    return comps


# --------------------------------------------------------------------------- hook plumbing


@contextlib.contextmanager
def _pre_hooks(modules: Mapping[int, torch.nn.Module], fns: Mapping[int, Callable]) -> Iterator[None]:
    """Register raw torch forward pre-hooks (``with_kwargs``); removed on exit, also on errors."""
    handles = []
    try:
        for key, fn in fns.items():
            handles.append(modules[key].register_forward_pre_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _strip_caches(kwargs: dict) -> dict:
    """Block kwargs for a side run: no KV cache (a side run must not append to one)."""
    out = {k: (None if type(v).__name__.endswith("Cache") else v) for k, v in kwargs.items()}
    if "use_cache" in out:
        out["use_cache"] = False
    return out


def head_output_weights(model, info: ModelInfo, layers: Iterable[int]) -> dict[int, torch.Tensor]:
    """``W_O`` per layer, ``[n_heads, d_head, d_model]``: head ``h`` writes ``z_h @ W_O[h]`` to the residual."""
    out = {}
    for layer in set(layers):
        w = model.blocks[layer].attn.W_O.detach()
        if tuple(w.shape) != (info.n_heads, info.d_head, info.d_model):
            raise RuntimeError(
                f"blocks.{layer}.attn.W_O has shape {tuple(w.shape)}, expected "
                f"{(info.n_heads, info.d_head, info.d_model)}"
            )
        out[layer] = w
    return out


def position_mask(ablator: Ablator, device) -> torch.Tensor:
    """``[pos, 1]`` float mask of the positions the ablator ablates (all by default)."""
    m = torch.zeros(ablator.seq_len, 1, device=device)
    if ablator.positions is None:
        m[:] = 1.0
    else:
        m[list(ablator.positions)] = 1.0
    return m


def sender_delta(
    sender: Component, act: torch.Tensor, value: torch.Tensor, w_o: torch.Tensor | None, pos_mask: torch.Tensor
) -> torch.Tensor:
    """The residual-stream change ``val_s - out_s`` when ``sender`` is ablated, ``[batch, pos, d_model]``.

    ``act`` is the sender's activation at its hook (``hook_z`` ``[batch, pos, n_heads, d_head]`` or
    ``hook_mlp_out`` ``[batch, pos, d_model]``), ``value`` the ablation value (``[pos, ...]`` or
    ``[batch, pos, ...]``), ``w_o`` the layer's ``W_O`` for heads.
    """
    value = value.to(act.device, act.dtype)
    if sender.is_head:
        diff = value[..., sender.index, :] - act[:, :, sender.index, :]  # [batch, pos, d_head]
        diff = diff @ w_o[sender.index].to(act.dtype)
    else:
        diff = value - act
    return diff * pos_mask.to(act.dtype)


@dataclass
class _SideSpec:
    """What one side run of block ``L`` does at ``hook_q/k/v/z``: replace some, capture some."""

    replace: dict[str, torch.Tensor] = field(default_factory=dict)
    capture: set[str] = field(default_factory=set)
    captured: dict[str, torch.Tensor] = field(default_factory=dict)


class EdgePatcher:
    """Runs a node circuit with any set of edges removed (each with a weight), one forward pass each.

    ``components`` is the node circuit (heads and MLPs); everything else stays ablated with the
    ``ablator``'s values. ``logits(removed)`` takes ``{Edge: weight}`` (weight 1.0 = edge removed;
    other weights scale the sender's change, used for finite-difference checks) and returns the
    final-position logits ``[batch, d_vocab]``. ``forward_passes`` counts main passes (side runs of
    single blocks are counted separately in ``side_block_runs``).
    """

    def __init__(self, ablator: Ablator, components: Iterable[Component]):
        self.ab = ablator
        self.model = ablator.model
        self.info = ablator.info
        self.components = check_components(self.info, components)
        self.ablated = [c for c in self.info.components if c not in self.components]
        self.device = ablator.tokens.device
        self.pos_mask = position_mask(ablator, self.device)
        self.w_o = head_output_weights(self.model, self.info, {c.layer for c in self.components if c.is_head})
        self.forward_passes = 0
        self.side_block_runs = 0
        self._baseline: float | None = None
        self._valid: set[Edge] = set()

    # ---- public
    def logits(self, removed: Mapping[Edge, float] | Iterable[Edge] = ()) -> torch.Tensor:
        """Final-position logits ``[batch, d_vocab]`` of the node circuit with ``removed`` edges removed."""
        removed = self._normalise(removed)
        plan = _Plan(removed)
        with torch.no_grad(), self._patched(plan):
            logits = self.model(self.ab.tokens, logits_to_keep=1, use_cache=False)[:, -1, :]
        self.forward_passes += 1
        self.ab.forward_passes += 1
        return logits

    def metric(self, removed: Mapping[Edge, float] | Iterable[Edge] = ()) -> float:
        """Dataset-mean metric (e.g. logit difference, nats) with ``removed`` edges removed."""
        return self.ab.metric_value(self.logits(removed))

    def score(self, removed: Mapping[Edge, float] | Iterable[Edge] = ()) -> float:
        """Fraction of the full model's metric kept with ``removed`` edges removed."""
        return self.ab.fraction_of_full(self.metric(removed))

    def baseline_score(self) -> float:
        """The node circuit's score (no edge removed); cached."""
        if self._baseline is None:
            self._baseline = self.score({})
        return self._baseline

    # ---- internals
    def _normalise(self, removed) -> dict[Edge, float]:
        if not isinstance(removed, Mapping):
            removed = {e: 1.0 for e in removed}
        out = {}
        for e, w in removed.items():
            if e not in self._valid:  # each edge validated once (pruning re-sends the removed set every pass)
                check_edge(self.info, e)
                for c in (e.sender, e.receiver):
                    if c is not None and c not in self.components:
                        raise ParameterError(
                            f"edge {e}: {c} is not in the node circuit (its output is ablated already)"
                        )
                self._valid.add(e)
            if float(w) != 0.0:
                out[e] = float(w)
        return out

    @contextlib.contextmanager
    def _patched(self, plan: _Plan) -> Iterator[None]:
        state = _RunState()
        hooks = list(self.ab.hooks(self.ablated))  # ablation runs first on shared hook points
        for layer in range(self.info.n_layers):
            z_name = get_act_name("z", layer)
            if plan.head_receivers_at(layer) or plan.head_senders_at(layer):
                hooks.append((z_name, self._z_hook(layer, plan, state)))
            if plan.head_receivers_at(layer):
                for x in HEAD_INPUTS:
                    hooks.append((get_act_name(x, layer), self._side_qkv_hook(x, state)))
            if (mlp_r := plan.mlp_receiver_at(layer)) is not None:
                hooks.append((get_act_name("in", layer, "ln2"), self._add_hook(plan.incoming[(mlp_r, "mlp")], state)))
            if plan.mlp_sender_at(layer) is not None:
                hooks.append((get_act_name("mlp_out", layer), self._mlp_sender_hook(plan.mlp_sender_at(layer), state)))
        if (None, LOGITS) in plan.incoming:
            hooks.append(("ln_final.hook_in", self._add_hook(plan.incoming[(None, LOGITS)], state)))
        pre = {l: self._side_runs_hook(l, plan, state) for l in range(self.info.n_layers) if plan.head_receivers_at(l)}
        with _pre_hooks(self.model.blocks, pre), self.model.hooks(fwd_hooks=hooks):
            yield

    def _residual_change(self, incoming: list[tuple[Component, float]], state: _RunState) -> torch.Tensor:
        """``sum_w w * (val_s - out_s)`` ``[batch, pos, d_model]`` over a receiver's removed edges."""
        total = 0
        for s, w in incoming:
            if s not in state.deltas:
                raise RuntimeError(f"sender {s} has not run before its receiver (hook order)")
            total = total + w * state.deltas[s]
        return total

    def _add_hook(self, incoming, state: _RunState) -> Callable:
        def hook(act, hook=None):  # noqa: ARG001
            if state.side is not None:
                return act
            return act + self._residual_change(incoming, state).to(act.dtype)

        return hook

    def _mlp_sender_hook(self, sender: Component, state: _RunState) -> Callable:
        name = get_act_name("mlp_out", sender.layer)

        def hook(act, hook=None):  # noqa: ARG001
            if state.side is None:
                state.deltas[sender] = sender_delta(sender, act, self.ab.values[name], None, self.pos_mask)
            return act

        return hook

    def _z_hook(self, layer: int, plan: _Plan, state: _RunState) -> Callable:
        name = get_act_name("z", layer)
        senders = plan.head_senders_at(layer)

        def hook(act, hook=None):  # noqa: ARG001
            if state.side is not None:  # a side run: capture z, change nothing
                if "z" in state.side.capture:
                    state.side.captured["z"] = act.detach().clone()
                return act
            patched = state.patched_z.pop(layer, {})
            if patched:
                act = act.clone()
                for h, z in patched.items():
                    act[:, :, h, :] = z.to(act.dtype)
            for s in senders:  # a patched receiver sends its patched output
                state.deltas[s] = sender_delta(s, act, self.ab.values[name], self.w_o[layer], self.pos_mask)
            return act

        return hook

    def _side_qkv_hook(self, x: str, state: _RunState) -> Callable:
        def hook(act, hook=None):  # noqa: ARG001
            spec = state.side
            if spec is None:
                return act
            if x in spec.capture:
                spec.captured[x] = act.detach().clone()
            if x in spec.replace:
                return spec.replace[x].to(act.dtype)
            return act

        return hook

    def _side_runs_hook(self, layer: int, plan: _Plan, state: _RunState) -> Callable:
        block = self.model.blocks[layer]

        def pre(module, args, kwargs):  # noqa: ARG001
            if state.side is not None:  # our own side run re-entering the block
                return None
            resid = args[0]  # resid_pre, [batch, pos, d_model]
            rest, kw = args[1:], _strip_caches(kwargs)

            def side(x: torch.Tensor, spec: _SideSpec) -> dict[str, torch.Tensor]:
                state.side = spec
                try:
                    block(x, *rest, **kw)
                finally:
                    state.side = None
                self.side_block_runs += 1
                return spec.captured

            clean = side(resid, _SideSpec(capture=set(HEAD_INPUTS)))
            patched: dict[int, torch.Tensor] = {}
            for h, inputs in plan.head_receivers_at(layer).items():
                rec = Component(layer, "head", h)
                resid_for = {
                    x: resid + self._residual_change(plan.incoming[(rec, x)], state).to(resid.dtype) for x in inputs
                }
                first, others = inputs[0], inputs[1:]
                replace = {x: clean[x] for x in HEAD_INPUTS if x != first}
                for x in others:  # each patched input computed from its own patched residual
                    replace[x] = side(resid_for[x], _SideSpec(capture={x}))[x]
                out = side(resid_for[first], _SideSpec(replace=replace, capture={"z"}))
                patched[h] = out["z"][:, :, h, :]
            state.patched_z[layer] = patched
            return None

        return pre


@dataclass
class _RunState:
    deltas: dict[Component, torch.Tensor] = field(default_factory=dict)
    patched_z: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)
    side: _SideSpec | None = None


class _Plan:
    """Removed edges grouped by receiver input, plus which senders must be measured."""

    def __init__(self, removed: Mapping[Edge, float]):
        self.incoming: dict[tuple[Component | None, str], list[tuple[Component, float]]] = defaultdict(list)
        for e, w in removed.items():  # insertion order: deterministic summation
            self.incoming[(e.receiver, e.input)].append((e.sender, w))
        self.incoming = dict(self.incoming)
        self._heads_in: dict[int, dict[int, list[str]]] = defaultdict(dict)
        for r, x in self.incoming:
            if r is not None and r.is_head:
                self._heads_in[r.layer].setdefault(r.index, []).append(x)
        for layer in self._heads_in:
            for h in self._heads_in[layer]:
                self._heads_in[layer][h] = [x for x in HEAD_INPUTS if x in self._heads_in[layer][h]]
        senders = {s for lst in self.incoming.values() for s, _ in lst}
        self._head_senders: dict[int, list[Component]] = defaultdict(list)
        self._mlp_senders: dict[int, Component] = {}
        for s in sort_components(senders):
            if s.is_head:
                self._head_senders[s.layer].append(s)
            else:
                self._mlp_senders[s.layer] = s
        self._mlp_receivers = {r.layer: r for (r, x) in self.incoming if r is not None and r.is_mlp}

    def head_receivers_at(self, layer: int) -> dict[int, list[str]]:
        return self._heads_in.get(layer, {})

    def head_senders_at(self, layer: int) -> list[Component]:
        return self._head_senders.get(layer, [])

    def mlp_sender_at(self, layer: int) -> Component | None:
        return self._mlp_senders.get(layer)

    def mlp_receiver_at(self, layer: int) -> Component | None:
        return self._mlp_receivers.get(layer)


# --------------------------------------------------------------------------- single edges


def path_patch_edge(
    ablator: Ablator,
    components: Iterable[Component],
    sender: Component | str,
    receiver: Component | str | None,
    input: str | None = None,
    removed: Iterable[Edge] = (),
) -> float:
    """Score of the node circuit ``components`` with the single edge ``sender -> receiver.input`` removed.

    ``receiver`` is a head (``input`` in q/k/v), an MLP (input ``"mlp"``) or ``None``/``"logits"``.
    ``removed`` edges (if any) are removed as well (the edge circuit the edge is tested in).
    Returns the metric as a fraction of the full model's (1.0 = full behaviour), computed in one
    forward pass (plus side runs of the receiver's block for q/k/v receivers). Components outside
    ``components`` stay ablated.
    """
    e = edge(sender, receiver, input)
    patcher = EdgePatcher(ablator, components)
    return patcher.score({**{r: 1.0 for r in removed}, e: 1.0})


def edge_effects(
    ablator: Ablator, components: Iterable[Component], edges: Sequence[Edge] | None = None, progress: bool = True
) -> pd.DataFrame:  # noqa: F821
    """Exact path patching of each edge alone inside the node circuit.

    Returns a DataFrame with ``sender, receiver, input, score`` (fraction of full with the edge
    removed) and ``effect`` (``score - node circuit score``; negative = the edge matters).
    One forward pass per edge, plus one for the node circuit.
    """
    import pandas as pd

    patcher = EdgePatcher(ablator, components)
    edges = list(circuit_edges(ablator.info, patcher.components) if edges is None else edges)
    base = patcher.baseline_score()
    rows = []
    for e in tqdm(edges, desc="path patching edges", disable=not progress, leave=False):
        s = patcher.score({e: 1.0})
        rows.append({**e.to_dict(s), "effect": s - base})
    return pd.DataFrame(rows, columns=["sender", "receiver", "input", "score", "effect"])
