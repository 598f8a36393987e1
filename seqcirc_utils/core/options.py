"""The names a user chooses from: tasks, templates, directions, corruptions, prefixes, metrics, methods.

Importable without torch, transformer_lens or pandas, so the command line checks every argument before
anything heavy loads (``seqcirc circuit --task nosuch`` answers in a fraction of a second). The options
the algorithms branch on are :class:`~enum.StrEnum` types (:class:`Metric`, :class:`AblationMode`,
:class:`PruneMethod`, :class:`SweepOrder`, :class:`EdgeMethod`, :class:`EdgeInput`): a member *is* its
string (``Metric.KL == "kl"``, JSON writes ``"kl"``), ``X.parse(value)`` turns a user's string into a
member or raises a one-line :class:`~seqcirc_utils.core.errors.ParameterError` naming the valid values,
and ``X.values()`` gives the plain strings (command-line ``choices``). The tuples below (``METRICS``,
``METHODS``, ...) are those values. This module imports only :mod:`seqcirc_utils.core.errors`.
"""

from __future__ import annotations

import re
from enum import StrEnum

from seqcirc_utils.core.errors import ParameterError


class Option(StrEnum):
    """A choice among named strings: ``parse`` (user input -> member, or a one-line ParameterError) and
    ``values`` (the plain strings, in declaration order)."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def label(cls) -> str:
        """What the option is called in messages (the class name in words unless a subclass says otherwise)."""
        return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()

    @classmethod
    def parse(cls, value: str | Option):
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ParameterError(f"unknown {cls.label()} {value!r}; valid: {', '.join(cls.values())}") from None


class Metric(Option):
    """What a circuit score measures (``scoring.ablation``): the logit difference correct - incorrect,
    the KL divergence from the full model, or the greater-than probability difference."""

    LOGIT_DIFF = "logit_diff"
    KL = "kl"
    PROB_DIFF = "prob_diff"


class AblationMode(Option):
    """What replaces an ablated component's activation.

    - ``mean``: the per-position mean over the corrupted prompts (the paper's choice).
    - ``zero``: zeros.
    - ``resample``: the same prompt's corrupted-run activation (the paired corrupted prompt).
    """

    MEAN = "mean"
    ZERO = "zero"
    RESAMPLE = "resample"

    @property
    def needs_corrupted_run(self) -> bool:
        return self is not AblationMode.ZERO


class PruneMethod(Option):
    """How a node circuit is found (``discovery.pruning``): the paper's ablation sweep, or the fast
    attribution-ranked search."""

    SWEEP = "sweep"
    FAST = "fast"

    @classmethod
    def label(cls) -> str:
        return "pruning method"


class SweepOrder(Option):
    """The sweep's component order: the paper's (backward then forward) or by descending effect."""

    PAPER = "paper"
    DESCENDING = "descending"


class EdgeMethod(Option):
    """How an edge circuit is found inside a node circuit: exact path patching, EAP or EAP-IG."""

    EXACT = "exact"
    EAP = "eap"
    EAP_IG = "eap-ig"

    @classmethod
    def label(cls) -> str:
        return "edge pruning method"


class EdgeInput(Option):
    """Which input of the receiver an edge feeds: a head's query, key or value, an MLP, or the logits."""

    Q = "q"
    K = "k"
    V = "v"
    MLP = "mlp"
    LOGITS = "logits"


# --------------------------------------------------------------------------- models (models.py)
EMBEDDED_MODEL = "smollm2-135m"
TINY_MODELS = ("tiny-gpt2", "tiny-llama", "gpt2-small-random")

# --------------------------------------------------------------------------- datasets (tasks.py)
#: The sequence families, members in order.
FAMILIES: dict[str, list[str]] = {
    "digits": [str(i) for i in range(100)],
    "number_words": [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ],
    "months": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "letters": [chr(c) for c in range(ord("A"), ord("Z") + 1)],
}
GREATER_THAN = "greater_than"
#: Two-digit numbers 10..99 whose answer is the units digit (the prompt ends after the answer's tens digit);
#: for tokenizers that split numbers into digit tokens (SmolLM2). Not a family: its members are multi-token.
NUMBERS = "numbers"
#: The control task: random-token induction copying (``K L M K L`` -> ``M``, K/L/M distinct random single-token
#: words): a task with a single-token answer and no sequence in it, found the same way as the sequence tasks.
INDUCTION_COPY = "induction_copy"
TASKS = (*FAMILIES, NUMBERS, GREATER_THAN, INDUCTION_COPY)
#: The roles a sequence-disjoint split gives its own sequences to, by default (``tasks.datasets.Split``).
SPLIT_ROLES = ("discovery", "heldout")
#: The roles of a selection / evaluation split: what a chapter picks (top heads, layers) it picks on "selection",
#: what it reports it measures on "evaluation" (sequence-disjoint; claims conventions section 1).
SELECTION_ROLES = ("selection", "evaluation")
#: How a held-out set relates to the discovery set: disjoint sequence identities, or a labelled resample.
SPLIT_MODES = ("disjoint", "resampled")
#: Bootstrap resamples of every interval (:mod:`seqcirc_utils.core.stats`).
N_RESAMPLES = 1000
#: The fewest distinct sequence identities a split gives each role unless told otherwise: the smallest
#: spaces on SmolLM2 (digits of length 5: 5 sequences; step-2 digits of length 3: 4) still split in two.
MIN_SEQUENCES_PER_ROLE = 2
#: A role with fewer distinct sequences than this gives small-sample estimates, and the chapters say so (the
#: headline tasks are sized to 48 discovery and 24 held-out sequences; single-token families have 3 to 17).
FEW_SEQUENCES = 20
TEMPLATES = ("pure", "comma", "among_words", "mixed")
DIRECTIONS = ("increasing", "decreasing")
CORRUPTIONS = (
    "randAll",
    "switchLastTwo",
    "repeatLastTwo",
    "repeatFirstAll",
    "repeatRand",
    "permutation",
    "permutationKeepLast",
)
PREFIX_MODES = ("document", "bos", "none")

# --------------------------------------------------------------------------- scoring (ablation.py)
METRICS = Metric.values()
ABLATION_MODES = AblationMode.values()

# --------------------------------------------------------------------------- node circuits (pruning.py)
PAPER = SweepOrder.PAPER.value
DESCENDING = SweepOrder.DESCENDING.value
SWEEP_ORDERS = SweepOrder.values()
METHODS = PruneMethod.values()

# --------------------------------------------------------------------------- edge circuits (discovery/edges)
EDGE_METHODS = EdgeMethod.values()
HEAD_INPUTS = (EdgeInput.Q.value, EdgeInput.K.value, EdgeInput.V.value)

# --------------------------------------------------------------------------- OV scores (ov_scores.py)
BASIC_KINDS = ("copy", "next", "prev")
EMBEDDINGS = ("mlp0", "mlp0_only", "embed")
OVER = ("family", "vocab")
