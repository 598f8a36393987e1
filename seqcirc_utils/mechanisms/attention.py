"""Attention patterns per head on a dataset: who attends to which sequence member.

Patterns come from ``blocks.L.attn.hook_pattern`` (``[batch, n_heads, query, key]``, one row per
*query* head, so grouped-query models need no special care). Prompts may have different lengths
and member counts: they are right-padded, which cannot change earlier positions of a causal model,
and only real positions are read.

Units: attention weights (probabilities in [0, 1]); "mean" is over prompts (and member pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head
from seqcirc_utils.models.loading import model_device


@dataclass
class MemberAttention:
    """Attention between sequence members, per head.

    - ``final_to_member[l, h, b, j]``: from prompt b's final position to its member j
      (members counted from the *end*: j = -1 is the last member, stored at index ``n - 1``
      after right-alignment; ``member_mask`` marks the members a prompt has).
    - ``member_to_member[l, h, b, i, j]``: from member i to member j (j < i; zero elsewhere).
    - ``final_to_bos[l, h, b]``: from the final position to position 0.

    Shapes: ``[n_layers, n_heads, batch, n_members]`` and ``[..., n_members, n_members]`` with
    ``n_members`` the largest member count; ``member_mask`` is ``[batch, n_members]``, members
    right-aligned (the last member of every prompt is at index ``n_members - 1``).
    """

    final_to_member: torch.Tensor
    member_to_member: torch.Tensor
    final_to_bos: torch.Tensor
    member_mask: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.final_to_member.shape[0]

    @property
    def n_heads(self) -> int:
        return self.final_to_member.shape[1]


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists into ``[batch, max_len]`` (causal models ignore what follows)."""
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in sequences], dtype=torch.long)


def _pad_id(model) -> int:
    tok = model.tokenizer
    for tid in (tok.pad_token_id, tok.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def iter_patterns(
    model,
    tokens: Sequence[Sequence[int]] | torch.Tensor,
    *,
    batch_size: int = 32,
    fwd_hooks: Iterable = (),
    progress: bool = False,
):
    """Yield ``(start, patterns)`` per batch: ``patterns`` is ``[n_layers, batch, n_heads, q, k]``.

    ``tokens`` is ``[batch, pos]`` or a list of token lists (right-padded here). ``fwd_hooks`` are
    active during the forward pass and run before the pattern is recorded (so a hook that edits
    ``hook_pattern`` is seen).
    """
    if not torch.is_tensor(tokens):
        tokens = pad_right(tokens, _pad_id(model))
    n_layers = len(model.blocks)
    names = [get_act_name("pattern", l) for l in range(n_layers)]
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="attention", disable=not progress, leave=False):
        chunk = tokens[start : start + batch_size].to(model_device(model))
        store: dict[str, torch.Tensor] = {}

        def grab(pattern, hook):
            store[hook.name] = pattern.detach()

        with model.hooks(fwd_hooks=list(fwd_hooks) + [(n, grab) for n in names]):
            model(chunk)
        missing = [n for n in names if n not in store]
        if missing:
            raise RuntimeError(f"attention hooks did not fire: {missing[:3]}...")
        yield start, torch.stack([store[n] for n in names]).float().cpu()


def member_attention(
    model,
    tokens: Sequence[Sequence[int]] | torch.Tensor,
    member_positions: Sequence[Sequence[int]],
    final_positions: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    fwd_hooks: Iterable = (),
    progress: bool = True,
) -> MemberAttention:
    """Attention from the final position to each member and between members (see :class:`MemberAttention`).

    ``final_positions`` defaults to each prompt's last token.
    """
    n = len(member_positions)
    lengths = [len(t) for t in tokens] if not torch.is_tensor(tokens) else [tokens.shape[1]] * tokens.shape[0]
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} prompts but {n} member-position lists")
    finals = list(final_positions) if final_positions is not None else [L - 1 for L in lengths]
    m = max(len(p) for p in member_positions)
    n_layers, n_heads = len(model.blocks), int(model.cfg.n_heads)
    f2m = torch.zeros(n_layers, n_heads, n, m)
    m2m = torch.zeros(n_layers, n_heads, n, m, m)
    f2b = torch.zeros(n_layers, n_heads, n)
    mask = torch.zeros(n, m, dtype=torch.bool)
    for start, pat in iter_patterns(model, tokens, batch_size=batch_size, fwd_hooks=fwd_hooks, progress=progress):
        for i in range(pat.shape[1]):
            b = start + i
            pos = torch.as_tensor(list(member_positions[b]), dtype=torch.long)
            off = m - len(pos)  # right-align members
            mask[b, off:] = True
            p = pat[:, i]  # [n_layers, n_heads, q, k]
            f2m[:, :, b, off:] = p[:, :, finals[b], pos]
            f2b[:, :, b] = p[:, :, finals[b], 0]
            mm = p[:, :, pos][:, :, :, pos]  # [n_layers, n_heads, n_mem, n_mem]
            m2m[:, :, b, off:, off:] = torch.tril(mm, diagonal=-1)
    return MemberAttention(f2m, m2m, f2b, mask)


def dataset_member_attention(model, dataset, **kwargs) -> MemberAttention:
    """:func:`member_attention` on a :class:`~seqcirc_utils.tasks.datasets.TaskDataset`."""
    return member_attention(
        model,
        dataset.tokens,
        [p.member_positions for p in dataset.prompts],
        [p.final_position for p in dataset.prompts],
        **kwargs,
    )


def attention_summary(att: MemberAttention) -> pd.DataFrame:
    """One row per head (``"L9.H1"``): mean attention weights over prompts.

    Columns:

    - ``final_to_last_member``: final position -> last member.
    - ``final_to_members``: final position -> all members (summed).
    - ``final_to_bos``: final position -> position 0.
    - ``member_to_prev_member``: member i -> member i-1 (mean over i >= 1).
    - ``member_to_same_type``: member i -> all earlier members (summed; mean over i >= 1): how much a
      member reads tokens of its own type.
    - ``member_to_first_member``: member i -> the prompt's first member (mean over i >= 2).
    """
    L, H, B, M = att.final_to_member.shape
    mask = att.member_mask.float()  # [B, M]
    # pairs (i, i-1) where both exist
    prev_mask = mask[:, 1:] * mask[:, :-1]  # [B, M-1]
    idx = torch.arange(1, M)
    prev = att.member_to_member[:, :, :, idx, idx - 1]  # [L, H, B, M-1]
    earlier = att.member_to_member.sum(-1)[..., 1:]  # [L, H, B, M-1] (row i>=1)
    first_idx = (~att.member_mask).sum(-1)  # [B] index of each prompt's first member
    rows_first = []
    for b in range(B):
        f = int(first_idx[b])
        if M - f >= 3:  # prompts with at least 3 members
            rows_first.append(att.member_to_member[:, :, b, f + 2 :, f].mean(-1))
    to_first = torch.stack(rows_first, -1).mean(-1) if rows_first else torch.full((L, H), float("nan"))
    denom = prev_mask.sum().clamp(min=1)
    out = []
    for l in range(L):
        for h in range(H):
            out.append(
                {
                    "component": str(head(l, h)),
                    "layer": l,
                    "head": h,
                    "final_to_last_member": float(att.final_to_member[l, h, :, -1].mean()),
                    "final_to_members": float(att.final_to_member[l, h].sum(-1).mean()),
                    "final_to_bos": float(att.final_to_bos[l, h].mean()),
                    "member_to_prev_member": float((prev[l, h] * prev_mask).sum() / denom),
                    "member_to_same_type": float((earlier[l, h] * prev_mask).sum() / denom),
                    "member_to_first_member": float(to_first[l, h]),
                }
            )
    return pd.DataFrame(out)


def top_attention_heads(summary: pd.DataFrame, column: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` heads with the largest ``column`` of :func:`attention_summary`."""
    valid = [c for c in summary.columns if c not in ("component", "layer", "head")]
    if column not in valid:
        raise ParameterError(f"unknown column {column!r}; valid: {', '.join(valid)}")
    return summary.sort_values(column, ascending=False).head(n).reset_index(drop=True)


def final_to_member_table(att: MemberAttention) -> pd.DataFrame:
    """Mean attention from the final position to each member (columns ``m-4 .. m-1``, last = ``m-1``)."""
    L, H, _, M = att.final_to_member.shape
    mask = att.member_mask.float()
    means = (att.final_to_member * mask).sum(2) / mask.sum(0).clamp(min=1)  # [L, H, M]
    cols = [f"m{j - M}" for j in range(M)]
    rows = [
        {"component": str(head(l, h)), **{c: float(means[l, h, j]) for j, c in enumerate(cols)}}
        for l in range(L)
        for h in range(H)
    ]
    return pd.DataFrame(rows)


def member_to_member_matrix(att: MemberAttention, component) -> pd.DataFrame:
    """One head's mean member i -> member j attention (rows i = query member, columns j = key member)."""
    L, H = att.n_layers, att.n_heads
    if not component.is_head or not (0 <= component.layer < L and 0 <= component.index < H):
        raise ParameterError(f"{component} is not a head of this model ({L} layers x {H} heads)")
    M = att.member_mask.shape[1]
    pair = (att.member_mask[:, :, None] & att.member_mask[:, None, :]).float()  # [B, M, M]
    mat = (att.member_to_member[component.layer, component.index] * pair).sum(0) / pair.sum(0).clamp(min=1)
    names = [f"m{j - M}" for j in range(M)]
    return pd.DataFrame(mat.numpy(), index=names, columns=names)
