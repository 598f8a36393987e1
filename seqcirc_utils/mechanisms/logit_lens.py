"""Logit lens and direct logit attribution (DLA).

**Logit lens.** The residual stream before block 0 (``blocks.0.hook_resid_pre``, layer ``-1`` =
embeddings) and after every block ``l`` (``blocks.l.hook_resid_post``, layer ``l``) is read through
the model's own final norm and unembedding, ``unembed(ln_final(resid))``, exactly once per entry
(the paper's code applied the norm twice at the last layer and never elsewhere). The entry after the
last block is the model's own logits. Every position is read, not only the last.

**Direct logit attribution.** At the final position the final residual stream is a sum of parts:
``resid_pre_0`` (token + positional embeddings), each head's output ``z_h @ W_O[h]``, each layer's
attention output bias (``attn_out - sum_h head_h``, i.e. ``b_O``), each MLP's output. With the
final norm's scale *frozen* at its clean-run value, ``ln_final`` is affine in its input
(``g(x) = A x + g(0)``), so each part's contribution to ``logit(correct) - logit(incorrect)`` is
``(g(part) - g(0)) . (W_U[:, correct] - W_U[:, incorrect])`` and the constant
``g(0) . (...) + b_U[correct] - b_U[incorrect]`` (the final norm's bias and the unembedding bias)
is reported as ``bias``. The parts sum exactly to the model's logit difference. ``g`` is the model's
own ``ln_final`` module with ``hook_scale`` replaced by the frozen scale, so LayerNorm (centring +
bias) and RMSNorm are both handled by the model's code.

Units: logits and logit differences in nats; probabilities in [0, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.models.loading import model_device


def lens_logits(model, resid: torch.Tensor) -> torch.Tensor:
    """``unembed(ln_final(resid))``: ``[..., d_model]`` -> ``[..., d_vocab]`` (the norm applied once)."""
    return model.unembed(model.ln_final(resid))


def _resid_names(n_layers: int) -> list[str]:
    return [get_act_name("resid_pre", 0)] + [get_act_name("resid_post", l) for l in range(n_layers)]


@dataclass
class LogitLensResult:
    """Logit-lens readout of every layer at every position.

    Layer axis: index 0 = embeddings (layer ``-1``), index ``l + 1`` = after block ``l``; the last
    entry is the model's output. Tensors ``[n_layers + 1, batch, pos]``:

    - ``top1``: top-1 token id; ``top1_prob``: its probability.
    - ``target``: the token scored at each position — the actual next token, and at the final
      position the dataset's answer when given (``-1`` where there is none); ``target_rank``: its
      0-based rank over the full vocabulary (0 = top-1, ``-1`` where no target);
      ``target_prob``: its probability.
    """

    top1: torch.Tensor
    top1_prob: torch.Tensor
    target: torch.Tensor
    target_rank: torch.Tensor
    target_prob: torch.Tensor
    tokens: torch.Tensor
    final_positions: torch.Tensor

    @property
    def layers(self) -> list[int]:
        """Layer label of each entry: ``-1`` (embeddings), ``0 .. n_layers-1``."""
        return list(range(-1, self.top1.shape[0] - 1))

    def first_top1_layer(self) -> torch.Tensor:
        """Per prompt, the first layer at which the target is top-1 at the final position
        (``[batch]``; ``-2`` when it never is). Layer ``-1`` = embeddings."""
        b = torch.arange(self.top1.shape[1])
        is_top = self.target_rank[:, b, self.final_positions] == 0  # [n_entries, batch]
        first = torch.where(is_top.any(0), is_top.float().argmax(0), torch.full_like(b, -1))
        return torch.where(first >= 0, first - 1, torch.full_like(first, -2))

    def stable_top1_layer(self) -> torch.Tensor:
        """Per prompt, the first layer from which the target stays top-1 to the output (``-2``: not top-1 at the end)."""
        b = torch.arange(self.top1.shape[1])
        is_top = self.target_rank[:, b, self.final_positions] == 0  # [E, batch]
        stays = is_top.flip(0).cumprod(0).flip(0).bool()  # top-1 here and at every later entry
        first = torch.where(stays.any(0), stays.float().argmax(0), torch.full_like(b, -1))
        return torch.where(first >= 0, first - 1, torch.full_like(first, -2))

    def to_dataframe(self, tokenizer=None, final_only: bool = False) -> pd.DataFrame:
        """One row per (prompt, position, layer); with ``tokenizer``, decoded tokens too."""
        E, B, P = self.top1.shape
        rows = []
        for b in range(B):
            positions = [int(self.final_positions[b])] if final_only else range(P)
            for p in positions:
                for e in range(E):
                    row = {
                        "prompt": b,
                        "position": p,
                        "layer": e - 1,
                        "is_final": p == int(self.final_positions[b]),
                        "token": int(self.tokens[b, p]),
                        "top1": int(self.top1[e, b, p]),
                        "top1_prob": float(self.top1_prob[e, b, p]),
                        "target": int(self.target[b, p]),
                        "target_rank": int(self.target_rank[e, b, p]),
                        "target_prob": float(self.target_prob[e, b, p]),
                    }
                    if tokenizer is not None:
                        row["token_str"] = tokenizer.decode([row["token"]])
                        row["top1_str"] = tokenizer.decode([row["top1"]])
                        row["target_str"] = tokenizer.decode([row["target"]]) if row["target"] >= 0 else ""
                    rows.append(row)
        return pd.DataFrame(rows)


@torch.no_grad()
def logit_lens(
    model,
    tokens: torch.Tensor,
    answer_ids: torch.Tensor | None = None,
    final_positions: torch.Tensor | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> LogitLensResult:
    """Logit lens of ``tokens`` ``[batch, pos]`` at every layer and position (see :class:`LogitLensResult`).

    ``answer_ids`` ``[batch]`` is the target at ``final_positions`` (default: the last position).
    Logits are computed one layer at a time so ``[layers, batch, pos, d_vocab]`` is never held.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    B, P = tokens.shape
    finals = torch.full((B,), P - 1, dtype=torch.long) if final_positions is None else torch.as_tensor(final_positions)
    target = torch.full((B, P), -1, dtype=torch.long)
    target[:, :-1] = tokens[:, 1:]
    if answer_ids is not None:
        target[torch.arange(B), finals] = torch.as_tensor(answer_ids, dtype=torch.long)
    n_layers = len(model.blocks)
    names = _resid_names(n_layers)
    E = len(names)
    top1 = torch.zeros(E, B, P, dtype=torch.long)
    top1_prob = torch.zeros(E, B, P)
    rank = torch.full((E, B, P), -1, dtype=torch.long)
    tprob = torch.full((E, B, P), float("nan"))
    dev = model_device(model)
    for start in range(0, B, batch_size):
        chunk = tokens[start : start + batch_size].to(dev)
        tgt = target[start : start + batch_size].to(dev)
        has = tgt >= 0
        tgt_c = tgt.clamp(min=0)
        _, cache = model.run_with_cache(chunk, names_filter=lambda n: n in names)
        for e, name in enumerate(tqdm(names, desc="logit lens", disable=not progress, leave=False)):
            logits = lens_logits(model, cache[name]).float()  # [b, pos, d_vocab]
            probs = logits.softmax(-1)
            p1, i1 = probs.max(-1)
            sl = slice(start, start + chunk.shape[0])
            top1[e, sl], top1_prob[e, sl] = i1.cpu(), p1.cpu()
            t_logit = logits.gather(-1, tgt_c[..., None])  # [b, pos, 1]
            r = (logits > t_logit).sum(-1)
            rank[e, sl] = torch.where(has, r, torch.full_like(r, -1)).cpu()
            tp = probs.gather(-1, tgt_c[..., None])[..., 0]
            tprob[e, sl] = torch.where(has, tp, torch.full_like(tp, float("nan"))).cpu()
        del cache
    return LogitLensResult(top1, top1_prob, target, rank, tprob, tokens, finals)


def dataset_logit_lens(model, dataset, **kwargs) -> LogitLensResult:
    """:func:`logit_lens` on a :class:`~seqcirc_utils.tasks.datasets.TaskDataset` (answers at the final position)."""
    return logit_lens(model, dataset.tokens, dataset.answer_ids, dataset.final_positions, **kwargs)


def first_top1_summary(result: LogitLensResult) -> pd.DataFrame:
    """How many prompts first get the answer top-1 at each layer (``-2``: never)."""
    first = result.first_top1_layer()
    stable = result.stable_top1_layer()
    vals = sorted(set(first.tolist()) | set(stable.tolist()))
    return pd.DataFrame(
        {
            "layer": vals,
            "first_top1": [int((first == v).sum()) for v in vals],
            "stable_top1": [int((stable == v).sum()) for v in vals],
        }
    )


# --------------------------------------------------------------------------- DLA


@dataclass
class DLAResult:
    """Direct logit attribution at the final position.

    ``values``: ``[n_parts, batch]`` in nats, aligned with ``labels`` (``"embed"``, ``"L0.H0"`` ...,
    ``"L0.attn_bias"``, ``"MLP0"`` ..., ``"bias"``); ``logit_diff``: the model's own
    ``[batch]`` logit difference, which ``values.sum(0)`` reproduces.
    """

    values: torch.Tensor
    labels: list[str]
    logit_diff: torch.Tensor

    def to_dataframe(self) -> pd.DataFrame:
        """One row per part: ``component``, ``kind`` (embed/head/attn_bias/mlp/bias), ``layer``, ``mean``, ``std``."""
        rows = []
        for label, v in zip(self.labels, self.values):
            if label == "embed":
                kind, layer = "embed", -1
            elif label == "bias":
                kind, layer = "bias", len(self.labels)
            elif label.startswith("MLP"):
                kind, layer = "mlp", int(label[3:])
            elif label.endswith("attn_bias"):
                kind, layer = "attn_bias", int(label[1:].split(".")[0])
            else:
                kind, layer = "head", int(label[1:].split(".")[0])
            rows.append(
                {
                    "component": label,
                    "kind": kind,
                    "layer": layer,
                    "mean": float(v.mean()),
                    "std": float(v.std()) if v.numel() > 1 else 0.0,
                }
            )
        return pd.DataFrame(rows)


def frozen_ln_final(model, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``ln_final(x)`` with its scale replaced by ``scale`` (broadcastable to ``x[..., :1]``)."""

    def freeze(s, hook):
        return scale.to(s.dtype).expand_as(s)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*edited hook_scale.*")
        with model.hooks(fwd_hooks=[("ln_final.hook_scale", freeze)]):
            return model.ln_final(x)


@torch.no_grad()
def direct_logit_attribution(
    model,
    tokens: torch.Tensor,
    answer_ids: torch.Tensor,
    incorrect_ids: torch.Tensor,
    *,
    batch_size: int = 16,
    progress: bool = True,
    scale: torch.Tensor | None = None,
    fwd_hooks=(),
) -> DLAResult:
    """DLA of every head, attention bias, MLP, the embeddings and the biases to the final-position
    logit difference of ``tokens`` ``[batch, pos]`` (prompts share one length; the last position
    is the prediction position). See the module docstring for the decomposition.

    ``fwd_hooks`` (TransformerLens ``(name, fn)`` pairs, e.g. ablation hooks) run during the pass.
    ``scale`` ``[batch]``: the final norm's scale at the final position to freeze instead of the run's own
    (e.g. :func:`final_norm_scale` of the clean run, so that a knockout does not rescale every part's DLA
    together); the parts then sum to the logit difference of the run read through that frozen norm, not
    to the run's own (``logit_diff`` stays the run's own).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if scale is not None and scale.reshape(-1).shape[0] != tokens.shape[0]:
        raise ParameterError(
            f"scale must hold one value per prompt ({tokens.shape[0]}), got shape {tuple(scale.shape)}"
        )
    n_layers = len(model.blocks)
    W_O = model.W_O  # [n_layers, n_heads, d_head, d_model]; read once (the bridge rebuilds it per access)
    n_heads = W_O.shape[1]
    names = {get_act_name("resid_pre", 0), "ln_final.hook_scale", "ln_final.hook_in"}
    for l in range(n_layers):
        names |= {get_act_name("z", l), get_act_name("attn_out", l), get_act_name("mlp_out", l)}
    labels = ["embed"]
    for l in range(n_layers):
        labels += [str(head(l, h)) for h in range(n_heads)] + [f"L{l}.attn_bias", str(mlp(l))]
    labels.append("bias")
    dev = model_device(model)
    W_U = model.W_U
    out_vals, out_ld = [], []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="DLA", disable=not progress, leave=False):
        chunk = tokens[start : start + batch_size].to(dev)
        a = torch.as_tensor(answer_ids[start : start + batch_size]).to(dev)
        i = torch.as_tensor(incorrect_ids[start : start + batch_size]).to(dev)
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            logits, cache = model.run_with_cache(chunk, names_filter=lambda n: n in names)
        rows = torch.arange(chunk.shape[0], device=dev)
        ld = logits[rows, -1, a] - logits[rows, -1, i]
        parts = [cache[get_act_name("resid_pre", 0)][:, -1]]  # each [b, d_model]
        for l in range(n_layers):
            z = cache[get_act_name("z", l)][:, -1]  # [b, n_heads, d_head]
            heads = torch.einsum("bhe,hed->bhd", z, W_O[l].to(z))  # [b, n_heads, d_model]
            parts += list(heads.unbind(1))
            parts.append(cache[get_act_name("attn_out", l)][:, -1] - heads.sum(1))
            parts.append(cache[get_act_name("mlp_out", l)][:, -1])
        stack = torch.stack(parts, 1)  # [b, n_parts, d_model]
        zero = torch.zeros_like(stack[:, :1])
        if scale is None:
            frozen = cache["ln_final.hook_scale"][:, -1][:, None, :]  # [b, 1, 1]
        else:
            frozen = scale.reshape(-1)[start : start + batch_size].to(dev, stack.dtype)[:, None, None]
        g = frozen_ln_final(model, torch.cat([stack, zero], 1), frozen)  # [b, n_parts + 1, d_model]
        g0 = g[:, -1:]
        direction = (W_U[:, a] - W_U[:, i]).T  # [b, d_model]
        contrib = ((g[:, :-1] - g0) * direction[:, None, :]).sum(-1)  # [b, n_parts]
        b_U = model.b_U
        const = (g0[:, 0] * direction).sum(-1) + b_U[a] - b_U[i]
        out_vals.append(torch.cat([contrib, const[:, None]], 1).T.float().cpu())
        out_ld.append(ld.float().cpu())
        del cache
    return DLAResult(torch.cat(out_vals, 1), labels, torch.cat(out_ld))


@torch.no_grad()
def final_norm_scale(model, tokens: torch.Tensor, batch_size: int = 16, fwd_hooks=()) -> torch.Tensor:
    """The final norm's scale (``ln_final.hook_scale``: 1 / RMS for RMSNorm, 1 / std for LayerNorm) at the
    last position of ``tokens`` ``[batch, pos]``, ``[batch]`` (with ``fwd_hooks`` running)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    dev, out = model_device(model), []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size].to(dev)
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            _, cache = model.run_with_cache(chunk, names_filter=lambda n: n == "ln_final.hook_scale")
        out.append(cache["ln_final.hook_scale"][:, -1].reshape(-1).float().cpu())
    return torch.cat(out)


def dataset_dla(model, dataset, **kwargs) -> DLAResult:
    """:func:`direct_logit_attribution` on a :class:`~seqcirc_utils.tasks.datasets.TaskDataset`."""
    return direct_logit_attribution(model, dataset.tokens, dataset.answer_ids, dataset.incorrect_ids, **kwargs)


def top_dla(result: DLAResult, n: int = 10, by: str = "abs") -> pd.DataFrame:
    """The ``n`` parts with the largest mean attribution (``by="abs"`` magnitude, ``"pos"``, ``"neg"``)."""
    df = result.to_dataframe()
    if by == "abs":
        return df.reindex(df["mean"].abs().sort_values(ascending=False).index).head(n).reset_index(drop=True)
    if by in ("pos", "neg"):
        return df.sort_values("mean", ascending=(by == "neg")).head(n).reset_index(drop=True)
    raise ParameterError(f"unknown by {by!r}; valid: abs, pos, neg")
