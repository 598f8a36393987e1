"""The names a user chooses from: tasks, templates, directions, corruptions, prefixes, metrics, methods.

Plain constants, importable without torch, transformer_lens or pandas, so the command line checks every
argument before anything heavy loads (``seqcirc circuit --task nosuch`` answers in a fraction of a
second). The modules that implement each choice re-export the names they own (``tasks.TASKS``,
``ablation.METRICS``, ``pruning.METHODS``, ...); this module imports nothing from the package.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- models (models.py)
EMBEDDED_MODEL = "smollm2-135m"
TINY_MODELS = ("tiny-gpt2", "tiny-llama", "gpt2-small-random")

# --------------------------------------------------------------------------- datasets (tasks.py)
#: The sequence families, members in order.
FAMILIES: dict[str, list[str]] = {
    "digits": [str(i) for i in range(100)],
    "number_words": [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
        "nineteen", "twenty",
    ],
    "months": [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ],
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "letters": [chr(c) for c in range(ord("A"), ord("Z") + 1)],
}
GREATER_THAN = "greater_than"
#: Two-digit numbers 10..99 whose answer is the units digit (the prompt ends after the answer's tens digit);
#: for tokenizers that split numbers into digit tokens (SmolLM2). Not a family: its members are multi-token.
NUMBERS = "numbers"
TASKS = (*FAMILIES, NUMBERS, GREATER_THAN)
#: The roles a sequence-disjoint split gives its own sequences to, by default (``tasks.datasets.Split``).
SPLIT_ROLES = ("discovery", "heldout")
#: How a held-out set relates to the discovery set: disjoint sequence identities, or a labelled resample.
SPLIT_MODES = ("disjoint", "resampled")
TEMPLATES = ("pure", "comma", "among_words", "mixed")
DIRECTIONS = ("increasing", "decreasing")
CORRUPTIONS = ("randAll", "switchLastTwo", "repeatLastTwo", "repeatFirstAll", "repeatRand", "permutation")
PREFIX_MODES = ("document", "bos", "none")

# --------------------------------------------------------------------------- scoring (ablation.py)
METRICS = ("logit_diff", "kl", "prob_diff")

# --------------------------------------------------------------------------- node circuits (pruning.py)
PAPER = "paper"
DESCENDING = "descending"
SWEEP_ORDERS = (PAPER, DESCENDING)
METHODS = ("sweep", "fast")

# --------------------------------------------------------------------------- edge circuits (edge_pruning.py)
EDGE_METHODS = ("exact", "eap", "eap-ig")

# --------------------------------------------------------------------------- OV scores (ov_scores.py)
BASIC_KINDS = ("copy", "next", "prev")
EMBEDDINGS = ("mlp0", "mlp0_only", "embed")
OVER = ("family", "vocab")
