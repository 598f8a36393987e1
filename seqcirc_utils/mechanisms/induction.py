"""Induction-offset scores: does a head attend from member i to member i-k, or to the token k back?

Two scores per head and offset k, both mean attention weights in [0, 1]:

- **member offset** ``member[l, h, k-1]``: from member i to member i-k (mean over members i >= k).
- **token offset** ``token[l, h, k-1]``: from a member at position p to position p-k (whatever token
  is there; mean over members with p-k >= 0).

On a pure sequence ("1 2 3 4") with one token per member both read the same positions, so a head that
attends "to the previous member" cannot be told from one that attends "one token back". Prompts
with *irregular spacing* (:func:`spaced_prompts`: a random number of filler words between members,
and a random number of members) separate them: a same-type head keeps a high member-offset score
while its token-offset scores spread out; a positional head does the opposite.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.types import head
from seqcirc_utils.mechanisms.attention import iter_patterns
from seqcirc_utils.tasks.datasets import (
    FAMILIES,
    FILLER_WORDS,
    encode,
    resolve_prefix,
    single_token_at,
    single_token_members,
    single_token_words,
)


@dataclass
class MemberPrompts:
    """Prompts of possibly different lengths with known member positions (the prefix token included)."""

    texts: list[str]
    tokens: list[list[int]]
    member_positions: list[list[int]]
    members: list[list[str]]
    gaps: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


def single_token_fillers(tokenizer, words: Sequence[str] = FILLER_WORDS) -> list[str]:
    """Filler words that are one token after a space (and not family members)."""
    return single_token_words(tokenizer, words, exclude=[m for fam in FAMILIES.values() for m in fam])


def spaced_prompts(
    tokenizer,
    family: str = "digits",
    n: int = 32,
    *,
    n_members: tuple[int, int] = (3, 6),
    gap: tuple[int, int] = (0, 3),
    seed: int = 0,
    prefix: str = "document",
) -> MemberPrompts:
    """Increasing runs of ``family`` members separated by random numbers of filler words.

    Each prompt has between ``n_members[0]`` and ``n_members[1]`` consecutive members (inclusive)
    and between ``gap[0]`` and ``gap[1]`` filler words before each member after the first; the text
    starts with one filler so every member is in its in-context (after-a-space) form, e.g.
    ``"Hat 4 Sun Car 5 6 Pen 7"``. ``gap=(g, g)`` gives regular spacing. Tokens, fillers and member
    positions come from the tokenizer (offsets), never from hard-coded ids. ``prefix`` is the first
    token, as in :func:`~seqcirc_utils.tasks.datasets.make_dataset` (``document``, ``bos`` or ``none``).
    """
    if family not in FAMILIES:
        raise ParameterError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    lo, hi = n_members
    if not 2 <= lo <= hi:
        raise ParameterError(f"n_members must satisfy 2 <= min <= max, got {n_members}")
    if not 0 <= gap[0] <= gap[1]:
        raise ParameterError(f"gap must satisfy 0 <= min <= max, got {gap}")
    valid = set(single_token_members(tokenizer, family))
    starts = {
        k: [s for s in range(len(FAMILIES[family])) if all(s + j in valid for j in range(k))] for k in range(lo, hi + 1)
    }
    starts = {k: v for k, v in starts.items() if v}
    if not starts:
        raise TokenizationError(f"no run of {lo} consecutive single-token {family} members for this tokenizer")
    fillers = single_token_fillers(tokenizer)
    if not fillers:
        raise TokenizationError("no single-token filler words for this tokenizer")
    prefix_ids = resolve_prefix(tokenizer, prefix).ids  # the prompts' first token (tasks.resolve_prefix)
    rng = random.Random(f"spaced|{family}|{n}|{n_members}|{gap}|{seed}")
    out = MemberPrompts([], [], [], [], [])
    for _ in range(n):
        k = rng.choice(sorted(starts))
        s = rng.choice(starts[k])
        members = [FAMILIES[family][s + j] for j in range(k)]
        gaps = [0] + [rng.randint(gap[0], gap[1]) for _ in range(k - 1)]
        words: list[str] = [rng.choice(fillers)]
        is_member: list[bool] = [False]
        for g, m in zip(gaps, members):
            words += [rng.choice(fillers) for _ in range(g)] + [m]
            is_member += [False] * g + [True]
        text, spans = "", []
        for i, (w, mem) in enumerate(zip(words, is_member)):
            if i:
                text += " "
            if mem:
                spans.append((len(text), len(text) + len(w)))
            text += w
        ids, offsets = encode(tokenizer, text)
        positions = [
            len(prefix_ids) + single_token_at(tokenizer, ids, offsets, span, m) for m, span in zip(members, spans)
        ]
        out.texts.append(text)
        out.tokens.append(prefix_ids + ids)
        out.member_positions.append(positions)
        out.members.append(members)
        out.gaps.append(gaps)
    return out


@dataclass
class OffsetScores:
    """``member`` and ``token`` offset scores, each ``[n_layers, n_heads, max_offset]``
    (index k-1 holds offset k); ``n_member_pairs`` / ``n_token_pairs`` ``[max_offset]`` count the
    (query, key) pairs averaged."""

    member: torch.Tensor
    token: torch.Tensor
    n_member_pairs: torch.Tensor
    n_token_pairs: torch.Tensor

    @property
    def max_offset(self) -> int:
        return self.member.shape[-1]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per head: ``member_k1 .. member_kK``, ``token_k1 .. token_kK``, and
        ``same_type_k1 = member_k1 - token_k1`` (> 0: follows members, < 0: follows positions)."""
        L, H, K = self.member.shape
        rows = []
        for l in range(L):
            for h in range(H):
                row: dict = {"component": str(head(l, h)), "layer": l, "head": h}
                row.update({f"member_k{k + 1}": float(self.member[l, h, k]) for k in range(K)})
                row.update({f"token_k{k + 1}": float(self.token[l, h, k]) for k in range(K)})
                row["same_type_k1"] = row["member_k1"] - row["token_k1"]
                rows.append(row)
        return pd.DataFrame(rows)


def offset_scores(
    model,
    tokens: Sequence[Sequence[int]] | torch.Tensor,
    member_positions: Sequence[Sequence[int]],
    *,
    max_offset: int = 4,
    batch_size: int = 32,
    fwd_hooks: Iterable = (),
    progress: bool = True,
) -> OffsetScores:
    """Member- and token-offset attention scores of every head (see :class:`OffsetScores`).

    ``tokens``: ``[batch, pos]`` or token lists of different lengths; ``member_positions``: per
    prompt, the member positions in order. ``fwd_hooks`` run before patterns are recorded.
    """
    if max_offset < 1:
        raise ParameterError(f"max_offset must be >= 1, got {max_offset}")
    n = len(member_positions)
    if (tokens.shape[0] if torch.is_tensor(tokens) else len(tokens)) != n:
        raise ValueError("tokens and member_positions must have one entry per prompt")
    L, H, K = len(model.blocks), int(model.cfg.n_heads), max_offset
    m_sum, t_sum = torch.zeros(L, H, K), torch.zeros(L, H, K)
    m_cnt, t_cnt = torch.zeros(K), torch.zeros(K)
    for start, pat in iter_patterns(model, tokens, batch_size=batch_size, fwd_hooks=fwd_hooks, progress=progress):
        for i in range(pat.shape[1]):
            pos = torch.as_tensor(list(member_positions[start + i]), dtype=torch.long)
            p = pat[:, i]  # [L, H, q, k]
            for k in range(1, K + 1):
                if len(pos) > k:
                    m_sum[:, :, k - 1] += p[:, :, pos[k:], pos[:-k]].sum(-1)
                    m_cnt[k - 1] += len(pos) - k
                q = pos[pos - k >= 0]
                if len(q):
                    t_sum[:, :, k - 1] += p[:, :, q, q - k].sum(-1)
                    t_cnt[k - 1] += len(q)
    return OffsetScores(m_sum / m_cnt.clamp(min=1), t_sum / t_cnt.clamp(min=1), m_cnt, t_cnt)


def prompts_offset_scores(model, prompts: MemberPrompts, **kwargs) -> OffsetScores:
    """:func:`offset_scores` on :class:`MemberPrompts`."""
    return offset_scores(model, prompts.tokens, prompts.member_positions, **kwargs)


def dataset_offset_scores(model, dataset, **kwargs) -> OffsetScores:
    """:func:`offset_scores` on a :class:`~seqcirc_utils.tasks.datasets.TaskDataset` (regular spacing)."""
    return offset_scores(model, dataset.tokens, [p.member_positions for p in dataset.prompts], **kwargs)


def induction_table(
    model,
    family: str = "digits",
    *,
    n: int = 32,
    max_offset: int = 4,
    seed: int = 0,
    n_members: tuple[int, int] = (3, 6),
    gap: tuple[int, int] = (0, 3),
    progress: bool = True,
    prefix: str = "document",
) -> pd.DataFrame:
    """Offset scores of every head on irregularly spaced ``family`` prompts (one row per head)."""
    prompts = spaced_prompts(model.tokenizer, family, n, n_members=n_members, gap=gap, seed=seed, prefix=prefix)
    return prompts_offset_scores(model, prompts, max_offset=max_offset, progress=progress).to_dataframe()
