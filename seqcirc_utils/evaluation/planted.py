"""A ground-truth check of circuit discovery: a tiny transformer whose circuit is planted by hand.

The model is a 2-layer GPT-2-architecture transformer (untied unembedding, learned positions) with
every weight set by hand so that it continues sequences of one family (default ``months``) through
a known set of components, the **planted circuit**:

- ``L0.H0`` a *previous-token head*: at position ``p`` it attends to ``p - 1`` (positional
  query/key) and copies that token's identity into a "previous token" subspace;
- ``L1.H0`` an *add-two head*: it attends to its own position, reads the previous-token subspace
  written by ``L0.H0`` (member ``j``) and writes the unembedding direction of member ``j + 2``
  (the answer: the last shown member is ``j + 1``);
- ``MLP1`` a *successor lookup*: one GELU neuron per member reads the current token (member
  ``j + 1``) and writes the unembedding direction of member ``j + 2``.

The two routes contribute equally, so ablating any planted component halves the logit difference
(answer minus last shown member), well below an 80 % threshold. Every other head and MLP is a
**distractor**: it reads the tokens (layer-1 distractors also read ``L0.H0``'s output) and writes
non-trivially, but only into a subspace the unembedding and the planted components ignore, so
mean-ablating it changes activations without changing the answer.

LayerNorm would turn any write into a change of scale downstream. Every position therefore carries a
large constant direction (norm ``big``, in the positional embedding) and every LayerNorm gain is
``big / sqrt(d_model)``: the norms are then the identity up to a relative error of order
``(||signal|| / big)^2`` (below 0.1 % here). All hand-set directions are orthonormal and orthogonal
to the all-ones vector (LayerNorm's centring leaves them alone).

:func:`ground_truth_table` runs the sweep, the fast method and EAP-IG on this model and reports the
precision and recall of each against the planted set.

:func:`build_backup_planted_model` (chapter 13) builds a 3-layer model with what the simple one lacks and
real circuits have: a **backup** head that takes over when the primary add-two head is mean-ablated (it
reads whether the primary's answer is present and otherwise attends to an empty sink), a **negative** head
writing against the answer, and a distractor that **reaches the logits** (it moves every member's logit
together, so not the logit difference). Each component's role is in :attr:`PlantedModel.roles`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.types import Component, head, mlp, sort_components
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import FAMILIES, TaskDataset, make_dataset, single_token_id

PLANTED_FAMILY = "months"
PLANTED_METHODS = ("sweep", "fast", "eap-ig")


@dataclass(frozen=True)
class PlantedModel:
    """The hand-built model and what was planted in it."""

    model: object  # TransformerBridge
    info: object  # ModelInfo
    tokenizer: object
    family: str
    planted: frozenset[Component]
    distractors: frozenset[Component]
    #: Every component with a planted role, by name (``"L1.H0": "primary"``); the rest are plain distractors.
    roles: dict[str, str] = field(default_factory=dict)

    def with_role(self, role: str) -> list[Component]:
        """The components of ``role`` (a value of :attr:`roles`), in forward order."""
        return sort_components(c for c in self.info.components if self.roles.get(str(c)) == role)


@dataclass(frozen=True)
class _Subspaces:
    const: torch.Tensor  # [d_model]
    pos: torch.Tensor  # [n_pos, d_model]
    tok: torch.Tensor  # [n_members, d_model]
    prev: torch.Tensor  # [n_members, d_model]
    out: torch.Tensor  # [n_members, d_model]
    junk: torch.Tensor  # [n_junk, d_model]


def _subspaces(d_model: int, n_pos: int, n_members: int, n_junk: int, generator: torch.Generator) -> _Subspaces:
    """Orthonormal directions, all orthogonal to the all-ones vector (LayerNorm's centring ignores them)."""
    need = 1 + n_pos + 3 * n_members + n_junk
    if need > d_model - 1:
        raise ParameterError(
            f"the planted model needs d_model > {need} (positions {n_pos}, members {n_members}); got {d_model}"
        )
    a = torch.randn(d_model, d_model, generator=generator, dtype=torch.float64)
    a[:, 0] = 1.0
    q = torch.linalg.qr(a)[0][:, 1:].T.float()  # [d_model - 1, d_model], rows orthonormal, each _|_ ones
    sizes = [1, n_pos, n_members, n_members, n_members, n_junk]
    const, pos, tok, prev, out, junk = torch.split(q[:need], sizes)
    return _Subspaces(const[0], pos, tok, prev, out, junk)


def member_token_forms(tokenizer, family: str) -> list[list[int]]:
    """Per family member (in order): its single-token ids with and without a leading space.

    Raises :class:`TokenizationError` when a member has no single-token form with a leading space (the form
    the answers take)."""
    if family not in FAMILIES:
        raise ParameterError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    forms = []
    for word in FAMILIES[family]:
        spaced = single_token_id(tokenizer, word, split_space=False)
        if spaced is None:
            raise TokenizationError(
                f"{family} member {word!r} is not one token with a leading space: {tokenizer.encode(' ' + word)}"
            )
        bare = single_token_id(tokenizer, word, after_space=False)
        forms.append([spaced] + ([bare] if bare is not None and bare != spaced else []))
    return forms


def build_planted_model(
    family: str = PLANTED_FAMILY,
    d_model: int = 128,
    n_heads: int = 4,
    n_ctx: int = 32,
    big: float = 100.0,
    gain: float = 1.0,
    unembed_scale: float = 8.0,
    attention_sharpness: float = 30.0,
    distractor_scale: float = 3.0,
    seed: int = 0,
    device: str = "cpu",
) -> PlantedModel:
    """Build the hand-set 2-layer model (see the module docstring).

    ``gain`` is the norm of each route's write into the answer's unembedding direction,
    ``unembed_scale`` the unembedding's norm on those directions (full logit difference about
    ``2 * gain * unembed_scale``), ``attention_sharpness`` the attention logit of the attended
    position (the others get 0), ``distractor_scale`` the scale of the distractors' writes, ``big``
    the norm of the constant direction that makes LayerNorm near-linear. Tokenizer: GPT-2's (offline).
    """
    from seqcirc_utils.models.loading import ModelInfo, gpt2_tokenizer

    if n_heads < 2:
        raise ParameterError(f"the planted model needs n_heads >= 2 (a planted head and distractors); got {n_heads}")
    tok = gpt2_tokenizer()
    forms = member_token_forms(tok, family)
    n = len(forms)
    d_head = d_model // n_heads
    if d_head < max(n_ctx, n):
        raise ParameterError(f"d_head = d_model / n_heads must be >= n_ctx ({n_ctx}) and members ({n}); got {d_head}")
    g = torch.Generator().manual_seed(seed)
    n_junk = 8
    s = _subspaces(d_model, n_ctx, n, n_junk, g)
    d_mlp = 2 * n + 16
    hf = _hf_gpt2(tok, 2, n_heads, d_model, n_ctx, d_mlp)
    tr = hf.transformer
    sharp = attention_sharpness * math.sqrt(d_head)  # GPT-2 divides scores by sqrt(d_head)
    eye = torch.eye(d_head)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) / math.sqrt(shape[-1])

    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        # --- embeddings, norms, unembedding
        for j, ids in enumerate(forms):
            tr.wte.weight[ids] = s.tok[j]
            hf.lm_head.weight[ids[0]] = unembed_scale * s.out[j]  # the spaced form is the answer form
        tr.wpe.weight[:] = big * s.const + s.pos
        ln_gain = big / math.sqrt(d_model)
        for ln in [tr.ln_f] + [b.ln_1 for b in tr.h] + [b.ln_2 for b in tr.h]:
            ln.weight.fill_(ln_gain)

        def set_head(layer: int, h: int, wq, wk, wv, wo) -> None:
            _set_head(tr, d_model, d_head, layer, h, wq, wk, wv, wo)

        pos_q = s.pos.T @ eye[:n_ctx] * sharp  # position p -> sharp * a_p
        pos_self = s.pos.T @ eye[:n_ctx]  # position s -> a_s
        pos_next = s.pos[:-1].T @ eye[1:n_ctx]  # position s -> a_{s+1}
        read_tok = s.tok.T @ eye[:n]  # member j -> b_j
        read_prev = s.prev.T @ eye[:n]
        # --- planted: L0.H0 previous-token head (tok at p-1 -> prev subspace at p)
        set_head(0, 0, pos_q, pos_next, read_tok, eye[:n].T @ s.prev)
        # --- planted: L1.H0 add-two head (prev subspace at p -> answer direction j + 2)
        add_two = torch.zeros(d_head, d_model)
        for j in range(n - 2):
            add_two[j] = gain * s.out[j + 2]
        set_head(1, 0, pos_q, pos_self, read_prev, add_two)
        # --- planted: MLP1 successor lookup (current token j -> answer direction j + 1)
        fc, proj = tr.h[1].mlp.c_fc, tr.h[1].mlp.c_proj
        act = 10.0  # each neuron's pre-activation: +act on its member, -act otherwise
        fc.weight[:, :n] = 2 * act * s.tok.T
        fc.bias[:n] = -act
        for j in range(n - 1):
            proj.weight[j] = gain / act * s.out[j + 1]
        # --- distractors: read tokens / positions (layer 1 also the planted prev subspace), write junk only
        junk_out = lambda: distractor_scale * rand(d_head, n_junk) @ s.junk  # noqa: E731
        for h in range(1, n_heads):
            # layer 0: uniform attention (zero query/key); layer 1: attends to its own position
            set_head(
                0, h, torch.zeros(d_model, d_head), torch.zeros(d_model, d_head), s.tok.T @ rand(n, d_head), junk_out()
            )
            set_head(1, h, pos_q, pos_self, s.tok.T @ rand(n, d_head) + s.prev.T @ rand(n, d_head), junk_out())
        # MLP0 and MLP1's other neurons: pre-activations ~ N(0, 9) from the token, outputs into junk
        m0 = tr.h[0].mlp
        m0.c_fc.weight[:] = 3.0 * s.tok.T @ torch.randn(n, d_mlp, generator=g)
        m0.c_proj.weight[:] = distractor_scale * rand(d_mlp, n_junk) @ s.junk / (3 * math.sqrt(d_mlp / 2))
        fc.weight[:, n:] = 3.0 * s.tok.T @ torch.randn(n, d_mlp - n, generator=g)
        proj.weight[n:] = distractor_scale * rand(d_mlp - n, n_junk) @ s.junk / (3 * math.sqrt((d_mlp - n) / 2))
    bridge = _bridge(hf, tok, device)
    info = ModelInfo.from_bridge(bridge, f"planted-{family}")
    planted = frozenset({head(0, 0), head(1, 0), mlp(1)})
    roles = {"L0.H0": "previous-token", "L1.H0": "primary", "MLP1": "successor MLP"}
    return PlantedModel(bridge, info, tok, family, planted, frozenset(info.components) - planted, roles)


#: The roles of the backup model's planted components (:func:`build_backup_planted_model`).
BACKUP_ROLES = ("previous-token", "primary", "successor MLP", "backup", "negative", "logit distractor")


def _orthonormal(d_model: int, sizes: Sequence[int], generator: torch.Generator) -> list[torch.Tensor]:
    """Blocks of orthonormal rows (``sizes[i]`` rows each, ``[size, d_model]``), all orthogonal to the all-ones
    vector (LayerNorm's centring leaves them alone)."""
    need = sum(sizes)
    if need > d_model - 1:
        raise ParameterError(f"the planted model needs d_model > {need} orthonormal directions; got {d_model}")
    a = torch.randn(d_model, d_model, generator=generator, dtype=torch.float64)
    a[:, 0] = 1.0
    q = torch.linalg.qr(a)[0][:, 1:].T.float()
    return list(torch.split(q[:need], list(sizes)))


def build_backup_planted_model(
    family: str = PLANTED_FAMILY,
    d_model: int = 128,
    n_heads: int = 4,
    n_ctx: int = 32,
    big: float = 100.0,
    gain: float = 1.0,
    backup_gain: float = 0.8,
    negative_gain: float = 0.3,
    logit_distractor_scale: float = 1.0,
    backup_margin: float = 10.0,
    backup_suppression: float = 20.0,
    unembed_scale: float = 8.0,
    attention_sharpness: float = 30.0,
    distractor_scale: float = 3.0,
    seed: int = 0,
    device: str = "cpu",
) -> PlantedModel:
    """A 3-layer hand-set model with what real circuits have and :func:`build_planted_model` lacks.

    Roles (:attr:`PlantedModel.roles`; the planted circuit is the first four):

    - ``L0.H0`` *previous-token* head and ``MLP1`` *successor MLP*, as in the simple model (the MLP writes
      ``gain`` into a second answer subspace ``out2`` that nothing reads);
    - ``L1.H0`` *primary* add-two head: writes ``gain`` into the answer subspace ``out``;
    - ``L2.H0`` *backup* head: its query at the final position reads what the primary wrote (``out``),
      its key at each position the answer that position's previous-token signal implies, so the two
      match when the primary's output is present. Attention scores: its own position ``backup_margin -
      backup_suppression * x`` (``x``: the primary's write into the answer's ``out`` direction, about
      ``gain`` clean, about ``gain / n_members`` when the primary is mean-ablated), the first position
      (whose value is empty, an attention sink) 0, every other position about -20. Clean, it attends to
      the sink and writes almost nothing; with the primary ablated it attends to its own position,
      reads the previous-token signal and writes ``backup_gain`` into ``out2`` of the answer: it takes over;
    - ``L1.H1`` *negative* head: writes ``-negative_gain`` into ``out2`` of the answer (against it);
    - ``L2.H1`` *logit distractor*: writes a token-dependent amount (scale ``logit_distractor_scale``) into
      a direction every member's unembedding shares (a coefficient in [-1, 1)) and, downwards, into one
      non-member token's (`` the``): it moves the logits (and probabilities) but not the answer-minus-incorrect
      logit difference;
    - every other head and MLP writes non-trivially into directions the unembedding ignores.

    Full logit difference about ``unembed_scale * (2 gain - negative_gain)``; with the primary mean-ablated
    about ``unembed_scale * (gain + backup_gain - negative_gain)``. ``d_model`` must hold ``4 n_members +
    n_ctx + 11`` orthonormal directions and ``d_head`` ``2 n_members + 2`` query/key coordinates.
    """
    from seqcirc_utils.models.loading import ModelInfo, gpt2_tokenizer

    if n_heads < 3:
        raise ParameterError(f"the backup planted model needs n_heads >= 3 (two planted heads a layer); got {n_heads}")
    tok = gpt2_tokenizer()
    forms = member_token_forms(tok, family)
    n = len(forms)
    d_head = d_model // n_heads
    if d_head < max(n_ctx, 2 * n + 2):
        raise ParameterError(
            f"d_head = d_model / n_heads must be >= n_ctx ({n_ctx}) and 2 * members + 2 ({2 * n + 2}); got {d_head}"
        )
    other_id = tok.encode(" the")[0]
    if any(other_id in ids for ids in forms):
        raise ParameterError(f"the logit distractor's token ' the' is a {family} member")
    g = torch.Generator().manual_seed(seed)
    n_junk = 8
    const, pos, tok_dir, prev, out, out2, common, other, junk = _orthonormal(
        d_model, [1, n_ctx, n, n, n, n, 1, 1, n_junk], g
    )
    const, common, other = const[0], common[0], other[0]
    d_mlp = 2 * n + 16
    hf = _hf_gpt2(tok, 3, n_heads, d_model, n_ctx, d_mlp)
    tr = hf.transformer
    root = math.sqrt(d_head)  # GPT-2 divides scores by sqrt(d_head)
    sharp = attention_sharpness * root
    eye = torch.eye(d_head)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) / math.sqrt(shape[-1])

    def set_head(layer: int, h: int, wq, wk, wv, wo) -> None:
        _set_head(tr, d_model, d_head, layer, h, wq, wk, wv, wo)

    def shifted_writes(directions: torch.Tensor, scale: float, shift: int) -> torch.Tensor:
        """``[d_head, d_model]``: value coordinate ``j`` writes ``scale * directions[j + shift]``."""
        w = torch.zeros(d_head, d_model)
        for j in range(n - shift):
            w[j] = scale * directions[j + shift]
        return w

    zeros = torch.zeros(d_model, d_head)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for j, ids in enumerate(forms):
            tr.wte.weight[ids] = tok_dir[j]
            hf.lm_head.weight[ids[0]] = unembed_scale * (out[j] + out2[j] + common)
        hf.lm_head.weight[other_id] = unembed_scale * other
        tr.wpe.weight[:] = big * const + pos
        for ln in [tr.ln_f] + [b.ln_1 for b in tr.h] + [b.ln_2 for b in tr.h]:
            ln.weight.fill_(big / math.sqrt(d_model))
        pos_q = pos.T @ eye[:n_ctx] * sharp
        pos_self = pos.T @ eye[:n_ctx]
        pos_next = pos[:-1].T @ eye[1:n_ctx]
        read_tok = tok_dir.T @ eye[:n]
        read_prev = prev.T @ eye[:n]
        # layer 0: previous-token head; distractors with uniform attention
        set_head(0, 0, pos_q, pos_next, read_tok, eye[:n].T @ prev)
        # layer 1: primary add-two head (into out), negative head (against the answer, into out2)
        set_head(1, 0, pos_q, pos_self, read_prev, shifted_writes(out, gain, 2))
        set_head(1, 1, pos_q, pos_self, read_prev, shifted_writes(out2, -negative_gain, 2))
        # layer 2: the backup head. Query/key coordinates: [0, n) same token (the own position),
        # [n, 2n) the primary's write against the answer implied here, 2n the sink (position 0), 2n + 1 a
        # baseline for every position.
        wq, wk = torch.zeros(d_model, d_head), torch.zeros(d_model, d_head)
        wq[:, :n] = (backup_margin + 20.0) * root * tok_dir.T
        wk[:, :n] = tok_dir.T
        wq[:, n : 2 * n] = -backup_suppression * root * out.T
        for j in range(n - 2):
            wk[:, n + j + 2] = prev[j]
        wq[:, 2 * n] = 20.0 * root / big * const
        wk[:, 2 * n] = pos[0]
        wq[:, 2 * n + 1] = -20.0 * root / big * const
        wk[:, 2 * n + 1] = const / big
        set_head(2, 0, wq, wk, read_prev, shifted_writes(out2, backup_gain, 2))
        # layer 2: the logit distractor (shared member direction and a non-member token)
        wo = torch.zeros(d_head, d_model)
        shared = 2 * torch.rand(n, 1, generator=g) - 1  # in [-1, 1): every member's logit moves together
        lowered = -torch.rand(n, 1, generator=g)  # the non-member token only goes down (never the top-1)
        wo[:n] = logit_distractor_scale * (shared * common + lowered * other)
        set_head(2, 1, pos_q, pos_self, read_tok, wo)
        # MLP1: successor lookup into out2
        fc, proj = tr.h[1].mlp.c_fc, tr.h[1].mlp.c_proj
        act = 10.0
        fc.weight[:, :n] = 2 * act * tok_dir.T
        fc.bias[:n] = -act
        for j in range(n - 1):
            proj.weight[j] = gain / act * out2[j + 1]
        # distractors: write junk only
        for h in range(1, n_heads):
            set_head(0, h, zeros, zeros, tok_dir.T @ rand(n, d_head), distractor_scale * rand(d_head, n_junk) @ junk)
        for layer, first in ((1, 2), (2, 2)):
            for h in range(first, n_heads):
                wv = tok_dir.T @ rand(n, d_head) + prev.T @ rand(n, d_head)
                set_head(layer, h, pos_q, pos_self, wv, distractor_scale * rand(d_head, n_junk) @ junk)
        for layer in (0, 2):
            m = tr.h[layer].mlp
            m.c_fc.weight[:] = 3.0 * tok_dir.T @ torch.randn(n, d_mlp, generator=g)
            m.c_proj.weight[:] = distractor_scale * rand(d_mlp, n_junk) @ junk / (3 * math.sqrt(d_mlp / 2))
        fc.weight[:, n:] = 3.0 * tok_dir.T @ torch.randn(n, d_mlp - n, generator=g)
        proj.weight[n:] = distractor_scale * rand(d_mlp - n, n_junk) @ junk / (3 * math.sqrt((d_mlp - n) / 2))
    bridge = _bridge(hf, tok, device)
    info = ModelInfo.from_bridge(bridge, f"planted-backup-{family}")
    roles = {
        "L0.H0": "previous-token",
        "L1.H0": "primary",
        "MLP1": "successor MLP",
        "L2.H0": "backup",
        "L1.H1": "negative",
        "L2.H1": "logit distractor",
    }
    planted = frozenset({head(0, 0), head(1, 0), mlp(1), head(2, 0)})
    negative = {head(1, 1)}
    return PlantedModel(bridge, info, tok, family, planted, frozenset(info.components) - planted - negative, roles)


def _hf_gpt2(tok, n_layer: int, n_heads: int, d_model: int, n_ctx: int, d_mlp: int):
    """An untied GPT-2 (Hugging Face) of this shape without dropout, in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_heads,
        n_embd=d_model,
        n_positions=n_ctx,
        n_inner=d_mlp,
        vocab_size=len(tok),
        tie_word_embeddings=False,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def _set_head(tr, d_model: int, d_head: int, layer: int, h: int, wq, wk, wv, wo) -> None:
    """Set head ``h`` of ``layer``: ``wq, wk, wv`` ``[d_model, d_head]`` (x @ w), ``wo`` ``[d_head, d_model]``."""
    attn = tr.h[layer].attn
    for k, w in enumerate((wq, wk, wv)):  # c_attn's output columns: [q heads | k heads | v heads]
        start = k * d_model + h * d_head
        attn.c_attn.weight[:, start : start + d_head] = w
    attn.c_proj.weight[h * d_head : (h + 1) * d_head] = wo


def _bridge(hf, tok, device: str):
    """The hand-set Hugging Face model as a frozen TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("planted-gpt2", hf_model=hf, tokenizer=tok, device=device)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


def planted_dataset(pm: PlantedModel, n: int = 32, seed: int = 0) -> TaskDataset:
    """The planted family's increasing sequences (pure template) on the planted model's tokenizer."""
    return make_dataset(pm.tokenizer, pm.family, model_name=pm.info.name, template="pure", n=n, seed=seed)


def precision_recall(found: Iterable[Component], planted: frozenset[Component]) -> tuple[float, float]:
    """``(precision, recall)`` of ``found`` against ``planted`` (precision 1.0 for an empty ``found``)."""
    found = set(found)
    hit = len(found & planted)
    return (hit / len(found) if found else 1.0), hit / len(planted)


def eap_ig_attributions(ablator: Ablator, ig_steps: int = 5) -> dict:
    """EAP-IG attribution of every edge of the full model (``{Edge: metric change in its units}``)."""
    from seqcirc_utils.discovery.edges.attribution import edge_attribution

    return edge_attribution(ablator, ablator.info.components, ig_steps=ig_steps, progress=False)


def eap_node_ranking(attributions: dict, components: Sequence[Component], full_metric: float) -> pd.DataFrame:
    """Nodes ranked by edge attributions: a node's score is the largest ``|attribution|`` (fraction
    of ``full_metric``) of any edge it sends or receives. Returns ``component, score``, high to low."""
    best = {c: 0.0 for c in components}
    for e, a in attributions.items():
        for c in (e.sender, e.receiver):
            if c is not None:
                best[c] = max(best[c], abs(a) / abs(full_metric))
    rows = [{"component": str(c), "score": v} for c, v in best.items()]
    return pd.DataFrame(rows).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def eap_edge_nodes(attributions: dict, threshold: float = 0.8) -> frozenset[Component]:
    """The nodes of the fewest edges that explain ``threshold`` of the attributed effect.

    Edges are sorted by attribution, most helpful first (most negative: removing them lowers the
    metric); the shortest prefix whose summed attribution reaches ``threshold`` times the sum over all
    edges with negative attribution is kept, and its senders and receivers (not the logits) are returned."""
    helpful = sorted((a, i) for i, a in enumerate(attributions.values()) if a < 0)
    edges = list(attributions)
    total = sum(a for a, _ in helpful)
    nodes: set[Component] = set()
    acc = 0.0
    for a, i in helpful:
        if acc <= threshold * total:  # both negative: the kept edges explain enough
            break
        acc += a
        nodes |= {c for c in (edges[i].sender, edges[i].receiver) if c is not None}
    return frozenset(nodes)


def ground_truth_table(
    threshold: float = 0.8,
    n_prompts: int = 32,
    seed: int = 0,
    ig_steps: int = 5,
    methods: Sequence[str] = PLANTED_METHODS,
    pm: PlantedModel | None = None,
) -> pd.DataFrame:
    """Run each discovery method on the planted model; precision and recall against the planted circuit.

    ``sweep`` and ``fast`` are :func:`~seqcirc_utils.discovery.pruning.prune` at ``threshold`` (mean ablation,
    logit difference); ``eap-ig`` (EAP-IG over every edge of the full model, ``ig_steps`` steps) keeps the
    nodes of :func:`eap_edge_nodes` at the same threshold and also reports how many planted nodes rank
    in the top ``len(planted)`` of :func:`eap_node_ranking` (``top_k_hits``; None for the other methods).
    Returns one row per method: ``method, found, n_found, planted, precision, recall, top_k_hits,
    score`` (the found set's circuit score, fraction of the full logit difference), ``forward_passes``.
    """
    from seqcirc_utils.discovery.pruning import prune

    unknown = set(methods) - set(PLANTED_METHODS)
    if unknown:
        raise ParameterError(f"unknown method(s) {sorted(unknown)}; valid: {', '.join(PLANTED_METHODS)}")
    pm = pm or build_planted_model()
    ds = planted_dataset(pm, n=n_prompts, seed=seed)
    rows = []
    for method in methods:
        ab = Ablator(pm.model, pm.info, ds, mode="mean", metric="logit_diff")
        p0 = ab.forward_passes
        top_k_hits = None
        if method == "eap-ig":
            attributions = eap_ig_attributions(ab, ig_steps)
            found = eap_edge_nodes(attributions, threshold)
            ranking = eap_node_ranking(attributions, pm.info.components, ab.full_metric)
            top_k_hits = int(ranking["component"].head(len(pm.planted)).isin([str(c) for c in pm.planted]).sum())
        else:
            found = prune(ab, [threshold], method=method, progress=False)[0].components
        passes = ab.forward_passes - p0
        precision, recall = precision_recall(found, pm.planted)
        rows.append(
            {
                "method": method,
                "found": " ".join(map(str, sort_components(found))),
                "n_found": len(found),
                "planted": " ".join(map(str, sort_components(pm.planted))),
                "precision": precision,
                "recall": recall,
                "top_k_hits": top_k_hits,
                "score": ab.score(found).score,
                "forward_passes": passes,
            }
        )
    return pd.DataFrame(rows)


def planted_markdown(results: Path) -> str:
    """The ground-truth table of ``results/<model>/robustness.json`` (written by notebook 09) as Markdown,
    for the methods page; a note when that file or its ``planted`` table is missing."""
    from seqcirc_utils.core.result_records import Robustness, read_record

    path = Path(results) / Robustness.file
    data = read_record(path, Robustness) if path.is_file() else None
    rows = data.planted if data else None
    if not rows:
        return "*Not in this run: notebook 09 (robustness) writes this table to `results/<model>/robustness.json`.*\n"
    columns = ["method", "found", "precision", "recall", "score", "forward_passes"]
    names = {"score": "score of found set", "forward_passes": "forward passes"}

    def cell(key: str, value) -> str:
        if key == "score":
            return f"{100 * value:.1f} %"
        if isinstance(value, float):
            return f"{value:.2f}"
        return f"`{value}`" if key == "found" else str(value)

    lines = [
        f"Planted circuit: `{rows[0]['planted']}`"
        + (" (smoke run: sizes reduced)" if data.smoke else "")
        + ". Computed by notebook 09 with `seqcirc_utils.evaluation.planted.ground_truth_table`.",
        "",
        "| " + " | ".join(names.get(c, c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in columns) + " |" for r in rows]
    eap = next((r for r in rows if r["method"] == "eap-ig" and r.get("top_k_hits") is not None), None)
    if eap:
        lines += [
            "",
            f"Under EAP-IG, {int(eap['top_k_hits'])} of the {len(rows[0]['planted'].split())} planted "
            "components are among the top-ranked nodes (a node's score: its largest edge attribution).",
        ]
    return "\n".join(lines) + "\n"
