"""The shared vocabulary of seqcirc: components, circuits, ablation modes.

A *component* is a node of the computational graph that circuit discovery keeps or removes:
an attention head (``"L9.H1"``), an MLP layer (``"MLP9"``) or an MLP neuron (``"L9.N120"``).
Every module speaks in these objects; strings are only for display and JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from seqcirc_utils.core.errors import ParameterError

ComponentKind = Literal["head", "mlp", "neuron"]

_HEAD_RE = re.compile(r"^L(\d+)\.H(\d+)$")
_MLP_RE = re.compile(r"^MLP(\d+)$")
_NEURON_RE = re.compile(r"^L(\d+)\.N(\d+)$")


@dataclass(frozen=True, order=True)
class Component:
    """One node of a circuit.

    ``layer`` is the block index (0-based). ``index`` is the query-head index for heads, the
    neuron index for neurons and ``None`` for a whole MLP layer.
    """

    layer: int
    kind: ComponentKind
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("head", "mlp", "neuron"):
            raise ParameterError(f"unknown component kind {self.kind!r}; valid: head, mlp, neuron")
        if self.kind == "mlp" and self.index is not None:
            raise ParameterError("an MLP component has no index")
        if self.kind != "mlp" and self.index is None:
            raise ParameterError(f"a {self.kind} component needs an index")

    def __str__(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}.H{self.index}"
        if self.kind == "mlp":
            return f"MLP{self.layer}"
        return f"L{self.layer}.N{self.index}"

    @property
    def is_head(self) -> bool:
        return self.kind == "head"

    @property
    def is_mlp(self) -> bool:
        return self.kind == "mlp"


def head(layer: int, index: int) -> Component:
    """The attention head ``index`` of block ``layer``."""
    return Component(layer, "head", index)


def mlp(layer: int) -> Component:
    """The MLP of block ``layer``."""
    return Component(layer, "mlp")


def parse_component(name: str) -> Component:
    """Parse ``"L9.H1"``, ``"MLP9"`` or ``"L9.N120"`` back into a :class:`Component`."""
    text = name.strip()
    if m := _HEAD_RE.match(text):
        return head(int(m[1]), int(m[2]))
    if m := _MLP_RE.match(text):
        return mlp(int(m[1]))
    if m := _NEURON_RE.match(text):
        return Component(int(m[1]), "neuron", int(m[2]))
    raise ParameterError(f"cannot parse component {name!r}; valid forms: 'L9.H1', 'MLP9', 'L9.N120'")


def sort_components(components: Iterable[Component]) -> list[Component]:
    """Sort in forward order: by layer, heads before the MLP of the same layer."""
    order = {"head": 0, "neuron": 1, "mlp": 2}
    return sorted(components, key=lambda c: (c.layer, order[c.kind], c.index or 0))


@dataclass(frozen=True)
class Circuit:
    """A set of kept components plus where it came from (task, threshold, method)."""

    components: frozenset[Component]
    provenance: dict | None = None

    @property
    def heads(self) -> list[Component]:
        return sort_components(c for c in self.components if c.is_head)

    @property
    def mlps(self) -> list[Component]:
        return sort_components(c for c in self.components if c.is_mlp)

    def __len__(self) -> int:
        return len(self.components)

    def __contains__(self, item: object) -> bool:
        return item in self.components

    @classmethod
    def from_lists(cls, heads: Iterable[Iterable[int]], mlps: Iterable[int], provenance: dict | None = None) -> Circuit:
        """Build from JSON-style ``heads=[[layer, head], ...]`` and ``mlps=[layer, ...]``."""
        comps = {head(int(l), int(h)) for l, h in heads} | {mlp(int(l)) for l in mlps}
        return cls(frozenset(comps), provenance)

    def to_lists(self) -> tuple[list[list[int]], list[int]]:
        """``(heads, mlps)`` in the circuit-JSON form."""
        heads = [[c.layer, c.index] for c in self.heads if c.index is not None]
        return heads, [c.layer for c in self.mlps]
