"""OV and QK circuit scores: what each head writes when it attends to a sequence member.

**The effective OV circuit** (successor-heads paper, Gould et al. 2024; the seqcont paper's
"next"/"copy" scores). For a member token ``t`` of a family and a head ``L.Hh``::

    e      = effective embedding of t                     [n_members, d_model]
    v      = ln1_L(e) @ W_V[L, kv(h)] + b_V                 [n_members, d_head]
    o      = v @ W_O[L, h]                                  [n_members, d_model]
    logits = unembed(ln_final(o))                           [n_members, d_vocab]

``kv(h) = h // (n_heads // n_kv_heads)`` (grouped-query attention). The norms are the model's own
modules (``blocks[0].ln2``, ``blocks[0].mlp``, ``blocks[L].ln1``, ``ln_final``, ``unembed``), so
LayerNorm and RMSNorm models are both handled without re-implementing either. ``b_O`` (shared by all
heads of a layer) is left out; ``b_V`` is kept (attention weights sum to 1, so a head's output
carries all of ``b_V @ W_O``).

Effective embeddings (``embedding=``):

- ``"mlp0"`` (default): ``W_E[t] + MLP0(ln2_0(W_E[t]))`` — the residual stream after block 0 with
  layer-0 attention left out, the successor-heads paper's choice (MLP0 acts as an extended embedding).
- ``"mlp0_only"``: ``MLP0(ln2_0(W_E[t]))`` without the residual.
- ``"embed"``: the plain token embedding ``W_E[t]``.

Positional embeddings are not added (the score is about the token, not its position).

**Members.** The family's single-token members (:func:`seqcirc_utils.tasks.datasets.single_token_members`)
in their *in-context* form: the token the member becomes after a space (``" March"`` for GPT-2 and
SmolLM2, ``" 5"`` for GPT-2 but the bare ``"5"`` for SmolLM2, which splits ``" 5"`` into ``" "`` +
``"5"``). The successor of a member is the next member of the same family (``March -> April``;
months are *not* checked against ordinal words, a bug of the paper's code). Wrap-around
(``December -> January``) is not counted; members whose target is not a single-token member are
skipped, so each kind's denominator can differ.

**Scores** (fractions in [0, 1]). ``kind`` names the target member relative to the input member
``i``: ``copy`` (``i``), ``next`` (``i+1``), ``prev`` (``i-1``), ``add<k>`` (``i+k``), ``sub<k>``
(``i-k``). The score is the fraction of input members whose target is in the top-``k`` of the
head's output logits, where the top-k is taken over:

- ``over="family"`` (default): the family's single-token members only (the successor-heads
  paper's "succession score" uses this restriction; ``top_k=1`` makes copy and next exclusive);
- ``over="vocab"``: the whole vocabulary (the seqcont paper's top-5 score); a target counts as hit
  if any of its surface forms (in-context token, bare token, ``" "`` + member token, whichever are
  single tokens) is in the top-k.

**QK** (:func:`qk_table`): ``ln1_L(e_q) W_Q[L,h] . ln1_L(e_k) W_K[L,kv(h)] / sqrt(d_head)`` for
every (query member, key member) pair. For rotary models this is the score at relative distance 0
(the rotation cancels for equal positions); distance-dependent effects are not included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.options import BASIC_KINDS, EMBEDDINGS, OVER  # noqa: F401 - BASIC_KINDS re-exported
from seqcirc_utils.core.types import Component, head
from seqcirc_utils.tasks.datasets import FAMILIES, single_token_id, single_token_members

_KIND_RE = re.compile(r"^(add|sub)(\d+)$")


# --------------------------------------------------------------------------- members


@dataclass(frozen=True)
class FamilyTokens:
    """A family's single-token members for one tokenizer.

    ``indices[j]`` is member j's index in ``FAMILIES[family]``; ``token_ids[j]`` its in-context
    token; ``surface_ids[j]`` every single-token spelling of it (used by ``over="vocab"``).
    """

    family: str
    indices: list[int]
    names: list[str]
    token_ids: list[int]
    surface_ids: list[frozenset[int]]

    def __len__(self) -> int:
        return len(self.indices)

    def position_of(self, family_index: int) -> int | None:
        """Row of the member with family index ``family_index`` (``None`` if not a member here)."""
        try:
            return self.indices.index(family_index)
        except ValueError:
            return None


def in_context_token(tokenizer, word: str) -> int:
    """The token ``word`` becomes after a space in running text
    (:func:`~seqcirc_utils.tasks.datasets.single_token_id`): ``" March"``, or ``"5"`` when the tokenizer splits
    the space off (SmolLM2's ``" "`` + ``"5"``). Raises :class:`TokenizationError` when it is not a single token."""
    token = single_token_id(tokenizer, word)
    if token is None:
        pieces = [tokenizer.decode([i]) for i in tokenizer("x " + word, add_special_tokens=False)["input_ids"]]
        raise TokenizationError(f"member {word!r} is not a single token after a space: pieces {pieces}")
    return token


def family_tokens(tokenizer, family: str) -> FamilyTokens:
    """The single-token members of ``family`` with their in-context and surface token ids."""
    if family not in FAMILIES:
        raise ParameterError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    indices = single_token_members(tokenizer, family)
    if len(indices) < 2:
        raise TokenizationError(f"family {family!r} has fewer than 2 single-token members for this tokenizer")
    names = [FAMILIES[family][i] for i in indices]
    token_ids, surface = [], []
    for w in names:
        tid = in_context_token(tokenizer, w)
        bare = single_token_id(tokenizer, w, after_space=False)  # "March" at a text's start
        spaced = single_token_id(tokenizer, w, split_space=False)  # " March" with the space merged
        forms = {t for t in (tid, bare, spaced) if t is not None}
        token_ids.append(tid)
        surface.append(frozenset(forms))
    return FamilyTokens(family, indices, names, token_ids, surface)


def parse_kind(kind: str) -> int:
    """Member shift of a score kind: ``copy`` 0, ``next`` +1, ``prev`` -1, ``add<k>`` +k, ``sub<k>`` -k."""
    if kind == "copy":
        return 0
    if kind == "next":
        return 1
    if kind == "prev":
        return -1
    if m := _KIND_RE.match(kind):
        return int(m[2]) if m[1] == "add" else -int(m[2])
    raise ParameterError(f"unknown score kind {kind!r}; valid: copy, next, prev, add<k>, sub<k> (e.g. add2)")


# --------------------------------------------------------------------------- circuits


def _bias(model, name: str) -> torch.Tensor | None:
    """``model.<name>`` or ``None`` for bias-free checkpoints (TransformerLens raises then)."""
    try:
        return getattr(model, name)
    except AttributeError:
        return None


def _kv_index(n_heads: int, n_kv: int) -> torch.Tensor:
    """``[n_heads]``: the key/value head each query head reads."""
    return torch.arange(n_heads) // (n_heads // n_kv)


@torch.no_grad()
def effective_embedding(model, token_ids: Sequence[int] | torch.Tensor, embedding: str = "mlp0") -> torch.Tensor:
    """Effective embeddings of ``token_ids``, ``[n_tokens, d_model]`` (see the module docstring)."""
    if embedding not in EMBEDDINGS:
        raise ParameterError(f"unknown embedding {embedding!r}; valid: {', '.join(EMBEDDINGS)}")
    ids = torch.as_tensor(list(token_ids) if not torch.is_tensor(token_ids) else token_ids, dtype=torch.long)
    x = model.W_E[ids.to(model.W_E.device)]  # [n, d_model]
    if embedding == "embed":
        return x
    block = model.blocks[0]
    mlp_out = block.mlp(block.ln2(x[None]))[0]  # run the model's own norm + MLP, [n, d_model]
    return mlp_out if embedding == "mlp0_only" else x + mlp_out


@torch.no_grad()
def head_ov_outputs(model, layer: int, resid: torch.Tensor) -> torch.Tensor:
    """Every head's OV output of layer ``layer`` for residual vectors ``resid`` [n, d_model].

    Returns ``[n_heads, n, d_model]``: ``(ln1_layer(resid) @ W_V[kv(h)] + b_V[kv(h)]) @ W_O[h]``
    (what head h adds to the stream if it attends fully to a token with residual ``resid``;
    ``b_O`` excluded).
    """
    x = model.blocks[layer].ln1(resid)  # [n, d_model]
    W_V = model.W_V[layer]  # [n_kv, d_model, d_head]
    W_O = model.W_O[layer]  # [n_heads, d_head, d_model]
    n_heads = W_O.shape[0]
    kv = _kv_index(n_heads, W_V.shape[0]).to(W_V.device)
    v = torch.einsum("nd,kde->kne", x, W_V)  # [n_kv, n, d_head]
    b_V = _bias(model, "b_V")
    if b_V is not None:
        v = v + b_V[layer][:, None, :]
    return torch.einsum("hne,hed->hnd", v[kv], W_O)  # [n_heads, n, d_model]


@torch.no_grad()
def ov_logits(model, layer: int, resid: torch.Tensor, token_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Output logits of every head of ``layer``: ``unembed(ln_final(OV(resid)))``, ``[n_heads, n, d_vocab]``.

    With ``token_ids`` only those columns are computed (``ln_final(o) @ W_U[:, ids] + b_U[ids]``,
    the unembedding restricted), ``[n_heads, n, len(token_ids)]``.
    """
    normed = model.ln_final(head_ov_outputs(model, layer, resid))  # [n_heads, n, d_model]
    if token_ids is None:
        return model.unembed(normed)
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=normed.device)
    return normed @ model.W_U[:, ids] + model.b_U[ids]


def _hits(logits: torch.Tensor, fam: FamilyTokens, shift: int, top_k: int, over: str) -> tuple[int, int]:
    """(hits, scored) of one head for the family's members.

    ``logits`` is ``[n_members, n_members]`` (family columns, in member order) when
    ``over="family"`` and ``[n_members, d_vocab]`` when ``over="vocab"``.
    """
    rows = [(j, fam.position_of(idx + shift)) for j, idx in enumerate(fam.indices)]
    rows = [(j, t) for j, t in rows if t is not None]
    if not rows:
        return 0, 0
    src = torch.tensor([j for j, _ in rows], device=logits.device)
    if over == "family":
        cand = logits  # [n_members, n_members]
        k = min(top_k, len(fam))
        top = cand[src].topk(k, dim=-1).indices  # columns = member rows
        tgt = torch.tensor([t for _, t in rows], device=logits.device)
        hits = (top == tgt[:, None]).any(-1).sum().item()
    else:
        top = logits[src].topk(top_k, dim=-1).indices.tolist()
        hits = sum(bool(set(tk) & fam.surface_ids[t]) for tk, (_, t) in zip(top, rows))
    return int(hits), len(rows)


def ov_scores(
    model,
    family: str,
    kinds: Sequence[str] = ("copy", "next", "prev", "add2"),
    *,
    top_k: int = 1,
    over: str = "family",
    embedding: str = "mlp0",
    layers: Sequence[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """OV scores of every head for ``family``: one row per head (``"L9.H1"``), one column per kind.

    Columns: ``component``, ``layer``, ``head``, ``kv_head``, one fraction in [0, 1] per kind, and
    ``n_<kind>`` (the members scored for that kind). See the module docstring for the definitions.
    """
    if over not in OVER:
        raise ParameterError(f"unknown over {over!r}; valid: {', '.join(OVER)}")
    if top_k < 1:
        raise ParameterError(f"top_k must be >= 1, got {top_k}")
    shifts = {k: parse_kind(k) for k in kinds}
    fam = family_tokens(model.tokenizer, family)
    resid = effective_embedding(model, fam.token_ids, embedding)  # [n_members, d_model]
    n_layers, n_heads = model.W_O.shape[:2]
    n_kv = model.W_V.shape[1]
    kv = _kv_index(n_heads, n_kv)
    rows = []
    for layer in tqdm(
        list(layers if layers is not None else range(n_layers)), desc=f"OV {family}", disable=not progress, leave=False
    ):
        # [n_heads, n_members, n_members] (family columns only) or [n_heads, n_members, d_vocab]
        logits = ov_logits(model, layer, resid, fam.token_ids if over == "family" else None)
        for h in range(n_heads):
            row: dict = {"component": str(head(layer, h)), "layer": layer, "head": h, "kv_head": int(kv[h])}
            for kind, shift in shifts.items():
                hits, n = _hits(logits[h], fam, shift, top_k, over)
                row[kind] = hits / n if n else float("nan")
                row[f"n_{kind}"] = n
            rows.append(row)
    return pd.DataFrame(rows)


def ov_member_table(model, component: Component, family: str, *, embedding: str = "mlp0") -> pd.DataFrame:
    """One head's OV logits restricted to the family: rows = input member, columns = output member."""
    if not component.is_head:
        raise ParameterError(f"{component} is not an attention head")
    fam = family_tokens(model.tokenizer, family)
    resid = effective_embedding(model, fam.token_ids, embedding)
    logits = ov_logits(model, component.layer, resid, fam.token_ids)[component.index]
    return pd.DataFrame(logits.cpu().numpy(), index=fam.names, columns=fam.names)


@torch.no_grad()
def qk_table(
    model,
    component: Component,
    family: str,
    *,
    embedding: str = "mlp0",
    softmax: bool = True,
) -> pd.DataFrame:
    """Which query members attend to which key members for head ``component``.

    Rows = query member, columns = key member. Values are attention scores
    ``q . k / sqrt(d_head)`` (biases included) or, with ``softmax=True``, each row's softmax over
    the family's members (the attention the query would pay if exactly these keys were present).
    Rotary models: scores at relative distance 0 (module docstring).
    """
    if not component.is_head:
        raise ParameterError(f"{component} is not an attention head")
    fam = family_tokens(model.tokenizer, family)
    layer, h = component.layer, component.index
    n_heads, n_kv = model.W_Q.shape[1], model.W_K.shape[1]
    if not 0 <= layer < model.W_Q.shape[0] or not 0 <= h < n_heads:
        raise ParameterError(f"{component} does not exist: {model.W_Q.shape[0]} layers, {n_heads} heads")
    kv = int(_kv_index(n_heads, n_kv)[h])
    x = model.blocks[layer].ln1(effective_embedding(model, fam.token_ids, embedding))  # [n, d_model]
    q = x @ model.W_Q[layer, h]  # [n, d_head]
    k = x @ model.W_K[layer, kv]
    b_Q, b_K = _bias(model, "b_Q"), _bias(model, "b_K")
    if b_Q is not None:
        q = q + b_Q[layer, h]
    if b_K is not None:
        k = k + b_K[layer, kv]
    scores = q @ k.T / math.sqrt(q.shape[-1])  # [n_query, n_key]
    if softmax:
        scores = scores.softmax(-1)
    return pd.DataFrame(scores.cpu().numpy(), index=fam.names, columns=fam.names)


def top_heads(df: pd.DataFrame, kind: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` heads with the highest ``kind`` score (ties broken by layer, head)."""
    if kind not in df.columns:
        raise ParameterError(f"no column {kind!r}; valid: {[c for c in df.columns if not c.startswith('n_')]}")
    return df.sort_values([kind, "layer", "head"], ascending=[False, True, True]).head(n).reset_index(drop=True)
