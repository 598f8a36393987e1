"""Tokenizer-aware prompt datasets for sequence continuation and greater-than.

A dataset is a list of :class:`Prompt` objects that all share one token length, each with a
corrupted twin of exactly the same length and member positions. Everything is built
*structurally*: a prompt is rendered from a list of member indices and filler words, and
positions are read off the tokenizer's offsets (the prefix token included), never from template arithmetic.

**Prompt prefix** (:func:`resolve_prefix`, ``prefix=`` on :func:`make_dataset`): every prompt starts
with one token chosen per model. ``"document"`` (default) is the pretraining document separator
(``<|endoftext|>`` where the vocabulary has it, as in GPT-2 and SmolLM2; otherwise the tokenizer's
``bos_token`` when that is not a chat-turn marker), so a prompt reads as the start of a document.
``"bos"`` is the tokenizer's ``bos_token`` whatever it is (for SmolLM2-Instruct the chat marker
``<|im_start|>``, which makes a prompt read as a chat turn), ``"none"`` no prefix at all.

Families (members in order): ``digits`` (0..99, those that are single tokens in context),
``number_words`` (zero..twenty), ``months``, ``days``, ``letters`` (A..Z). Templates:

- ``pure``         ``"1 2 3 4"``                     -> ``" 5"``
- ``comma``        ``"1, 2, 3, 4,"``                 -> ``" 5"``
- ``among_words``  ``"Van done in 1. Hat done in 2. Ring done in 3. Desk done in 4. Sun done in"`` -> ``" 5"``
- ``mixed``        earlier members from several families (one seeded pattern per dataset), the last
  member and the answer from the task's family, e.g. ``"two March 4 5"`` -> ``" 6"`` (task digits).

Greater-than (Hanna et al.): ``"The <noun> lasted from the year XXYY to the year XX"``; the
tokenizer decides how years split.

**Two-digit numbers** (task ``numbers``, :func:`_build_numbers`): members are numbers 10..99 (increasing
or decreasing, ``step`` apart, ``length`` shown) and the prompt ends after the answer's tens digit,
``"23 24 25 26 2"`` -> ``"7"`` (templates ``pure``, ``comma``, ``among_words``). ``answer_id`` is the
units digit's token, ``incorrect_id`` the last member's units digit, and :attr:`Prompt.crosses_decade`
marks prompts whose answer starts a new decade (``"17 18 19 2"`` -> ``"0"``). The task needs a
tokenizer that spells a two-digit number as two digit tokens (SmolLM2); a tokenizer with single-token
numbers up to 99 (GPT-2) is refused with a :class:`TokenizationError` that names ``digits``, the task
that already covers those numbers there. Member positions are the members' units-digit tokens.

**Control task** (``induction_copy``, :func:`_build_induction`): random-token induction copying, ``"K L M K L"``
-> ``" M"``, in any template but ``mixed`` (``among_words``: ``"Van done in K. Hat done in L. Ring done in M. Van done in
K. Hat done in L. Ring done in"``: the fillers repeat with their words). K, L, M are distinct
words drawn from the tokenizer's own vocabulary (:func:`induction_words`: lowercase word tokens, each one token
after a space and at a text's start, none a family member or filler word). ``length`` words are shown: the first
``length // 2 + 1`` distinct, then the first ones again (:func:`induction_shape`: 5 -> ``K L M K L``, 4 -> ``K L
M K``); the answer is the word that followed the last shown one before, the incorrect answer the last shown word.
Its sequence identities are a fixed seeded list of :data:`INDUCTION_SEQUENCES` distinct word tuples per tokenizer
(:func:`induction_sequences`), split like any task's; its one corruption (``randAll``) shows ``length`` distinct
random words (with distinct fillers), so nothing repeats and nothing can be copied. It has no direction or step.

**Sequence-disjoint splits** (:class:`Split`, :func:`make_split_datasets`): the sequence identities a
dataset can draw (:func:`sequence_space`: start values of member sequences; greater-than start years)
are partitioned by a seeded shuffle into one part per role (e.g. discovery / held-out), in proportion
to ``shares``; a dataset built with ``split=Split(role, ...)`` draws only its role's identities, and
(``among_words`` fillers, greater-than nouns) its role's share of the filler words. Roles with fewer
than ``min_sequences`` identities are refused (:class:`TooFewPromptsError`, naming the counts).
``sequences=k`` draws exactly ``k`` distinct sequences and cycles the prompts over them.

**Single-token policy.** Every member and answer must be one token *in context*. One tokenizer
behaviour is handled explicitly: when the tokenizer splits ``" 5"`` into ``" "`` + ``"5"`` (SmolLM2
does this for digits), the separating space is moved to the end of the prompt, so the prompt ends
with the space token and the answer is the bare ``"5"`` token. Anything else that is not a single
token raises :class:`TokenizationError` naming the pieces.

**Incorrect answer.** The last shown member (the paper's choice).
"""

from __future__ import annotations

import random
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from seqcirc_utils.core.errors import ParameterError, TokenizationError, TooFewPromptsError
from seqcirc_utils.core.options import (
    CORRUPTIONS,
    DIRECTIONS,
    FAMILIES,
    GREATER_THAN,
    INDUCTION_COPY,
    MIN_SEQUENCES_PER_ROLE,
    NUMBERS,
    PREFIX_MODES,
    SPLIT_ROLES,
    TASKS,
    TEMPLATES,
)

VERBS = ("done", "lost", "born")
MIXED_FAMILIES = ("digits", "number_words", "months")
#: The members of the ``numbers`` task (two-digit numbers).
NUMBER_RANGE = range(10, 100)
# The conventional document separator of GPT-2-style byte-level BPE vocabularies (GPT-2, SmolLM2, Qwen, ...).
DOCUMENT_SEPARATOR = "<|endoftext|>"
# Special tokens that open or close a chat turn (ChatML, Llama-3, Gemma, Llama-2 [INST], Phi/Zephyr roles).
CHAT_MARKER = re.compile(
    r"im_start|im_end|start_header_id|end_header_id|eot_id|start_of_turn|end_of_turn|\[/?INST\]"
    r"|^<\|(?:user|assistant|system|end)\|>$",
    re.IGNORECASE,
)

# Fillers for the among_words template (objects and names); filtered per tokenizer to those that
# are one token at the start of the text and after a space.
FILLER_WORDS = (
    "Van Hat Ring Desk Sun Car Cup Pen Box Bag Bed Bus Cat Dog Fox Egg Fan Key Map Net Pot Rug "
    "Toy Jar Lamp Book Door Fork Gate Ship Shoe Sock Tree Wall Bell Boat Cake Coat Drum Fish Flag "
    "Frog Hill Kite Lake Leaf Lock Milk Nest Rock Rose Sand Seed Star Tent Wolf Anna John Mary "
    "Paul Mark Tom Jack Sam Kate Lucy Emma Ben Max Leo Mia Zoe Ted Bob Jim Ann Eve Ray Amy"
).split()

# Nouns for the greater-than template (Hanna et al. use 120 such nouns); filtered per tokenizer.
GREATER_THAN_NOUNS = (
    "war siege campaign attack battle revolution occupation dispute conflict crisis struggle "
    "trial journey expedition voyage reign regime rule empire dynasty monarchy republic "
    "alliance treaty truce embargo blockade boycott strike protest riot rebellion uprising mutiny "
    "invasion raid crusade exile famine drought plague epidemic pandemic flood storm fire winter "
    "summer season period era age decade project program plan scheme effort mission tour tenure "
    "career marriage friendship partnership contract lease loan deal agreement union league "
    "movement reform renaissance boom recession depression shortage surge trend fashion craze "
    "festival fair exhibition show competition tournament contest race game match season series "
    "construction restoration expansion migration settlement colonization exploration survey "
    "census investigation inquiry study research experiment practice tradition custom policy "
    "law ban prohibition quarantine lockdown isolation silence drought outbreak excavation"
).split()


@dataclass(frozen=True)
class Prefix:
    """The token every prompt of a dataset starts with.

    ``mode`` is one of :data:`PREFIX_MODES`; ``token_id`` / ``token`` are the prefix token's id and
    string (both ``None`` for ``"none"``; ``token`` may be ``None`` for datasets read from old JSON).
    """

    mode: str
    token_id: int | None
    token: str | None

    @property
    def ids(self) -> list[int]:
        """The token ids prepended to every prompt (``[]`` or ``[token_id]``)."""
        return [] if self.token_id is None else [int(self.token_id)]

    def to_json(self) -> dict:
        return {"mode": self.mode, "token_id": self.token_id, "token": self.token}


def is_chat_marker(token: str | None) -> bool:
    """Whether ``token`` is a special token that opens or closes a chat turn (e.g. ``<|im_start|>``)."""
    return bool(token and CHAT_MARKER.search(token))


def _special_token_id(tokenizer, token: str) -> int | None:
    """The id of ``token`` if the vocabulary holds it as one token (not the unknown-token fallback)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or isinstance(tid, list):
        return None
    return int(tid) if tokenizer.convert_ids_to_tokens(int(tid)) == token else None


def resolve_prefix(tokenizer, mode: str = "document") -> Prefix:
    """The prefix token of ``mode`` for ``tokenizer`` (a computed, per-model choice).

    - ``"document"``: the pretraining document separator. ``<|endoftext|>`` when the vocabulary
      holds it (GPT-2, SmolLM2); otherwise the ``bos_token`` (Llama-style ``<s>``,
      ``<|begin_of_text|>``), else the ``eos_token``, whichever is first not a chat-turn marker.
      Never a chat marker: a tokenizer with nothing else raises :class:`ParameterError`.
    - ``"bos"``: ``tokenizer.bos_token`` whatever it is (may be a chat marker).
    - ``"none"``: no prefix.
    """
    if mode not in PREFIX_MODES:
        raise ParameterError(f"unknown prefix {mode!r}; valid: {', '.join(PREFIX_MODES)}")
    if mode == "none":
        return Prefix("none", None, None)
    if mode == "bos":
        if tokenizer.bos_token is None or tokenizer.bos_token_id is None:
            raise ParameterError("prefix 'bos': this tokenizer has no bos_token; valid here: document, none")
        return Prefix("bos", int(tokenizer.bos_token_id), str(tokenizer.bos_token))
    tid = _special_token_id(tokenizer, DOCUMENT_SEPARATOR)
    if tid is not None:
        return Prefix("document", tid, DOCUMENT_SEPARATOR)
    for token, tid in ((tokenizer.bos_token, tokenizer.bos_token_id), (tokenizer.eos_token, tokenizer.eos_token_id)):
        if token is not None and tid is not None and not is_chat_marker(str(token)):
            return Prefix("document", int(tid), str(token))
    raise ParameterError(
        f"prefix 'document': this tokenizer has no document separator ({DOCUMENT_SEPARATOR!r} is not in its "
        f"vocabulary and its bos/eos tokens {tokenizer.bos_token!r}/{tokenizer.eos_token!r} are chat markers "
        "or missing); valid: bos, none"
    )


@dataclass(frozen=True)
class Split:
    """One role's side of a seeded, deterministic partition of a task's sequence identities.

    ``roles`` are the parts (e.g. ``("discovery", "heldout")`` or ``("selection", "evaluation")``),
    ``shares`` their relative sizes (positive integers, one per role; ``None``: equal), ``seed`` the
    partition's seed (the same for every role of one split), ``min_sequences`` the fewest identities a
    role may get. Two datasets built with the same ``roles``, ``shares`` and ``seed`` and different
    ``role`` share no sequence identity (nor, for ``among_words`` and greater-than, filler word).
    """

    role: str
    roles: tuple[str, ...] = SPLIT_ROLES
    shares: tuple[int, ...] | None = None
    seed: int = 0
    min_sequences: int = MIN_SEQUENCES_PER_ROLE

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple(self.roles))
        if self.shares is not None:
            object.__setattr__(self, "shares", tuple(int(x) for x in self.shares))

    def validate(self) -> None:
        if len(self.roles) < 2 or len(set(self.roles)) != len(self.roles):
            raise ParameterError(f"split roles must be two or more distinct names, got {list(self.roles)}")
        if self.role not in self.roles:
            raise ParameterError(f"unknown split role {self.role!r}; valid: {', '.join(self.roles)}")
        if self.shares is not None and (len(self.shares) != len(self.roles) or min(self.shares) < 1):
            raise ParameterError(
                f"split shares must be one positive integer per role {list(self.roles)}, got {list(self.shares)}"
            )
        if not isinstance(self.min_sequences, int) or self.min_sequences < 1:
            raise ParameterError(f"min_sequences must be a positive integer, got {self.min_sequences!r}")

    def weights(self) -> tuple[int, ...]:
        """The shares, one per role (equal when ``shares`` is None)."""
        return self.shares if self.shares is not None else (1,) * len(self.roles)

    def to_json(self) -> dict:
        return {
            "role": self.role,
            "roles": list(self.roles),
            "shares": list(self.weights()),
            "seed": self.seed,
            "min_sequences": self.min_sequences,
        }

    @classmethod
    def from_json(cls, data: dict | None) -> Split | None:
        if data is None:
            return None
        return cls(
            data["role"],
            tuple(data["roles"]),
            tuple(data["shares"]),
            data["seed"],
            data.get("min_sequences", MIN_SEQUENCES_PER_ROLE),
        )


def as_split(value) -> Split | None:
    """``value`` as a :class:`Split`: a Split, its JSON dict, a role name (the default roles, equal shares,
    seed 0), or None."""
    if value is None or isinstance(value, Split):
        return value
    if isinstance(value, str):
        return Split(value)
    if isinstance(value, dict):
        return Split.from_json(value)
    raise ParameterError(f"split must be a Split, its JSON dict, a role name or None, got {type(value).__name__}")


def partition_counts(n_items: int, shares: Sequence[int]) -> list[int]:
    """How many of ``n_items`` each share gets: proportional, largest remainders first (ties to earlier
    roles), so the counts sum to ``n_items``."""
    total = sum(shares)
    exact = [n_items * s / total for s in shares]
    counts = [int(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n_items - sum(counts)]:
        counts[i] += 1
    return counts


def partition(items: Sequence, split: Split, salt: str = "") -> dict[str, list]:
    """Each role's part of ``items`` (deduplicated, sorted, then shuffled with the split's seed and cut by
    :func:`partition_counts`); each part is returned sorted. Deterministic in (items, roles, shares, seed, salt)."""
    pool = sorted(set(items), key=lambda x: (str(type(x)), x))
    random.Random(f"split|{salt}|{split.seed}").shuffle(pool)
    out, start = {}, 0
    for role, count in zip(split.roles, partition_counts(len(pool), split.weights())):
        out[role] = sorted(pool[start : start + count], key=lambda x: (str(type(x)), x))
        start += count
    return out


@dataclass(frozen=True)
class TaskSpec:
    """Everything that determines a dataset (with the tokenizer)."""

    task: str = "digits"
    template: str = "pure"
    direction: str = "increasing"
    step: int = 1
    length: int = 4
    corruption: str = "randAll"
    n: int = 64
    seed: int = 0
    verb: str = "done"
    prefix: str = "document"
    sequences: int | None = None  # exactly this many distinct sequences (None: each prompt draws one at random)
    split: Split | None = None  # draw only this role's sequence identities (None: the whole space)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", as_split(self.split))

    def validate(self) -> None:
        def choose(name: str, value, valid) -> None:
            if value not in valid:
                raise ParameterError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")

        choose("task", self.task, TASKS)
        choose("template", self.template, TEMPLATES)
        choose("direction", self.direction, DIRECTIONS)
        choose("corruption", self.corruption, CORRUPTIONS)
        choose("verb", self.verb, VERBS)
        choose("prefix", self.prefix, PREFIX_MODES)
        if not isinstance(self.n, int) or self.n <= 0:
            raise ParameterError(f"n must be a positive number of prompts, got {self.n!r}")
        if not isinstance(self.step, int) or self.step < 1:
            raise ParameterError(f"step must be a positive integer (1 = consecutive), got {self.step!r}")
        if self.length < 2:
            raise ParameterError(f"length (members shown) must be >= 2, got {self.length}")
        if self.task == GREATER_THAN and self.corruption != "randAll":
            raise ParameterError(
                "greater_than has one corruption (the year's last two digits -> '01'); leave corruption at its default"
            )
        if self.task == INDUCTION_COPY:
            if self.direction != "increasing" or self.step != 1 or self.corruption != "randAll":
                raise ParameterError(
                    "induction_copy copies a repeated pattern: it has no direction or step and one corruption "
                    "(randAll: distinct random words); leave direction, step and corruption at their defaults"
                )
            if self.length < 3:
                raise ParameterError(f"induction_copy needs length >= 3 (K L K -> L), got {self.length}")
        if self.template == "mixed" and self.task not in MIXED_FAMILIES:
            raise ParameterError(f"the mixed template draws members from {MIXED_FAMILIES}; use task digits")
        if self.task == NUMBERS and self.step % 10 == 0:
            raise ParameterError(
                f"numbers: step {self.step} keeps the units digit (answer = last member's units "
                "digit); use a step that is not a multiple of 10"
            )
        if self.sequences is not None and (not isinstance(self.sequences, int) or not 1 <= self.sequences <= self.n):
            raise ParameterError(f"sequences must be a positive integer <= n ({self.n}), got {self.sequences!r}")
        if self.split is not None:
            self.split.validate()


@dataclass
class Prompt:
    """One clean prompt and its corrupted twin.

    Positions index the token list (the prefix token, if any, is position 0); ``final_position`` is
    the last token, where the answer is predicted.
    """

    text: str
    tokens: list[int]
    answer_id: int
    incorrect_id: int
    member_positions: list[int]
    final_position: int
    corrupted_text: str
    corrupted_tokens: list[int]
    members: list[str]
    corrupted_members: list[str]
    answer: str
    incorrect: str
    year: int | None = None  # greater-than only: the start year XXYY
    crosses_decade: bool | None = None  # numbers only: the answer's tens digit differs from the last member's

    @property
    def sequence_id(self) -> str:
        """The identity of this prompt's sequence: the unit that splits keep apart and intervals resample.

        The member words joined by single spaces (prompts that differ only in fillers, template or
        corruption are the same sequence); for greater-than, ``"year:XXYY"`` (century prefix and start year).
        """
        return f"year:{self.year}" if self.year is not None else " ".join(self.members)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TaskDataset:
    """A list of prompts sharing one token length, plus the spec that made them."""

    model: str
    spec: TaskSpec
    prompts: list[Prompt]
    answer_token_policy: str = "single-token"
    greater_than_groups: list[list[int]] | None = field(default=None, repr=False)
    prefix: Prefix | None = None  # None: derived from ``spec.prefix`` and the first token (see :attr:`prefix_info`)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def sequence_ids(self) -> list[str]:
        """Each prompt's :attr:`Prompt.sequence_id`, in prompt order."""
        return [p.sequence_id for p in self.prompts]

    @property
    def n_sequences(self) -> int:
        """The number of distinct sequence identities among the prompts."""
        return len(set(self.sequence_ids))

    @property
    def seq_len(self) -> int:
        return len(self.prompts[0].tokens)

    def _tensor(self, key: str) -> torch.Tensor:
        return torch.tensor([getattr(p, key) for p in self.prompts], dtype=torch.long)

    @property
    def tokens(self) -> torch.Tensor:
        """Clean tokens ``[batch, pos]``."""
        return self._tensor("tokens")

    @property
    def corrupted_tokens(self) -> torch.Tensor:
        """Corrupted tokens ``[batch, pos]`` (same shape and member positions as :attr:`tokens`)."""
        return self._tensor("corrupted_tokens")

    @property
    def answer_ids(self) -> torch.Tensor:
        """Correct next-token ids ``[batch]``."""
        return self._tensor("answer_id")

    @property
    def incorrect_ids(self) -> torch.Tensor:
        """Incorrect (last shown member) token ids ``[batch]``."""
        return self._tensor("incorrect_id")

    @property
    def final_positions(self) -> torch.Tensor:
        """Prediction positions ``[batch]`` (all equal: one token length per dataset)."""
        return self._tensor("final_position")

    @property
    def years(self) -> torch.Tensor:
        """Greater-than start years ``[batch]``."""
        return self._tensor("year")

    def subset(self, indices: Sequence[int]) -> TaskDataset:
        return TaskDataset(
            self.model,
            self.spec,
            [self.prompts[i] for i in indices],
            self.answer_token_policy,
            self.greater_than_groups,
            self.prefix_info,
        )

    @property
    def prefix_info(self) -> Prefix:
        """The prompts' prefix token (mode, id, string)."""
        if self.prefix is not None:
            return self.prefix
        if self.spec.prefix == "none" or not self.prompts:
            return Prefix(self.spec.prefix, None, None)
        return Prefix(self.spec.prefix, int(self.prompts[0].tokens[0]), None)

    def check_uniform_length(self) -> int:
        """Return the shared token length; raise if prompts differ (ablation means need one length)."""
        lengths = {len(p.tokens) for p in self.prompts} | {len(p.corrupted_tokens) for p in self.prompts}
        if len(lengths) != 1:
            raise ValueError(f"prompts of one dataset must share one token length, found {sorted(lengths)}")
        return lengths.pop()

    def to_json(self) -> dict:
        """The exact dict ``seqcirc dataset --format json`` prints."""
        return {
            "model": self.model,
            "task": self.spec.task,
            "template": self.spec.template,
            "seed": self.spec.seed,
            "direction": self.spec.direction,
            "step": self.spec.step,
            "length": self.spec.length,
            "corruption": self.spec.corruption,
            "verb": self.spec.verb,
            "prepend_bos": self.prefix_info.token_id is not None,  # kept for older readers; see "prefix"
            "prefix": self.prefix_info.to_json(),
            "answer_token_policy": self.answer_token_policy,
            "greater_than_groups": self.greater_than_groups,
            "n_sequences": self.n_sequences,
            "sequences": self.spec.sequences,
            "split": self.spec.split.to_json() if self.spec.split is not None else None,
            "prompts": [p.to_json() for p in self.prompts],
        }

    @classmethod
    def from_json(cls, data: dict) -> TaskDataset:
        """Inverse of :meth:`to_json`. JSON written before the ``"prefix"`` key loads as prefix
        ``"bos"`` (what ``prepend_bos=true`` meant then, the id read off the first token) or ``"none"``."""
        prompts = [Prompt(**p) for p in data["prompts"]]
        if "prefix" in data:
            prefix = Prefix(**data["prefix"])
        elif data.get("prepend_bos", True) and prompts:
            prefix = Prefix("bos", int(prompts[0].tokens[0]), None)
        else:
            prefix = Prefix("none", None, None)
        spec = TaskSpec(
            task=data["task"],
            template=data["template"],
            direction=data.get("direction", "increasing"),
            step=data.get("step", 1),
            length=data.get("length", 4),
            corruption=data.get("corruption", "randAll"),
            n=len(data["prompts"]),
            seed=data["seed"],
            verb=data.get("verb", "done"),
            prefix=prefix.mode,
            sequences=data.get("sequences"),
            split=Split.from_json(data.get("split")),
        )
        return cls(
            data["model"],
            spec,
            prompts,
            data.get("answer_token_policy", "single-token"),
            data.get("greater_than_groups"),
            prefix,
        )


# --------------------------------------------------------------------------- tokenization helpers


def encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``(token ids, character offsets)`` of ``text`` without special tokens."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


# --------------------------------------------------------------------------- the single-token check
# Every "is this word one token?" question in the package is answered here, in one of two forms:
# a word on its own (``single_token_id``: at the text start, or after a space in running text) and a
# word at a known place inside an encoded prompt (``single_token_at``).


def single_token_id(tokenizer, word: str, after_space: bool = True, split_space: bool = True) -> int | None:
    """The one token ``word`` becomes, or ``None`` when it takes several tokens.

    ``after_space=False``: ``word`` at the start of a text. ``after_space=True``: ``word`` after a space
    in running text (``"x " + word`` is encoded, so the tokenizer's pre-tokenisation applies as in a
    prompt); the token is ``" March"`` for GPT-2-style tokenizers. ``split_space=True`` also accepts a
    tokenizer that splits the space off as a token of its own (SmolLM2's ``" "`` + ``"5"``) and returns
    the word's token; ``False`` requires the space to merge into the word's token.
    """

    def ids_of(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    if not after_space:
        ids = ids_of(word)
        return ids[0] if len(ids) == 1 else None
    context, ids = ids_of("x"), ids_of("x " + word)
    if ids[: len(context)] != context:
        return None
    rest = ids[len(context) :]
    if split_space and len(rest) == 2 and tokenizer.decode([rest[0]]) == " ":
        rest = rest[1:]
    if len(rest) != 1 or tokenizer.decode([rest[0]]).strip() != word:
        return None
    return rest[0]


def single_token_at(
    tokenizer, ids: Sequence[int], offsets: Sequence[tuple[int, int]], span: tuple[int, int], word: str
) -> int:
    """Index into ``ids`` of the one token that spells ``word`` at characters ``span`` of an encoded text.

    Raises :class:`TokenizationError` (one line, with the pieces) when ``word`` is split there or the
    covering token spells something else.
    """
    hit = _token_at_span(tokenizer, ids, offsets, *span, what=f"member {word!r}")
    pieces = _pieces(tokenizer, [ids[i] for i in hit])
    if len(hit) != 1 or pieces[0].strip() != word:
        raise TokenizationError(
            f"member {word!r} is not a single token in context: pieces {pieces}; "
            "choose members that are single tokens for this tokenizer"
        )
    return hit[0]


def _token_at_span(tokenizer, ids, offsets, start: int, end: int, what: str) -> list[int]:
    """Indices (into ``ids``) of the tokens covering characters ``start:end``."""
    hit = [i for i, (a, b) in enumerate(offsets) if b > start and a < end]
    if not hit:
        raise TokenizationError(f"{what}: no token covers characters {start}:{end}")
    return hit


@dataclass
class _Rendered:
    text: str
    spans: list[tuple[int, int]]  # character spans of each member (no leading space)


def _render(template: str, members: Sequence[str], fillers: Sequence[str], verb: str) -> _Rendered:
    """Render members into ``template``; the answer would follow after one space."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0

    def emit(s: str, member: bool = False) -> None:
        nonlocal pos
        if member:
            spans.append((pos, pos + len(s)))
        parts.append(s)
        pos += len(s)

    for i, m in enumerate(members):
        if template in ("pure", "mixed"):
            if i:
                emit(" ")
            emit(m, member=True)
        elif template == "comma":
            if i:
                emit(" ")
            emit(m, member=True)
            emit(",")
        elif template == "among_words":
            if i:
                emit(" ")
            emit(f"{fillers[i]} {verb} in ")
            emit(m, member=True)
            emit(".")
    if template == "among_words":
        emit(f" {fillers[len(members)]} {verb} in")
    return _Rendered("".join(parts), spans)


class _Tokenized:
    """A rendered prompt tokenized with the single-token policy applied."""

    def __init__(
        self,
        tokenizer,
        rendered: _Rendered,
        answer: str | None,
        prefix: Prefix,
        move_space: bool,
        members: Sequence[str],
    ):
        text = rendered.text + (" " if move_space else "")
        ids, offsets = encode(tokenizer, text)
        bos = prefix.ids
        self.text = text
        self.tokens = bos + ids
        self.member_positions = []
        for m, span in zip(members, rendered.spans):
            self.member_positions.append(len(bos) + single_token_at(tokenizer, ids, offsets, span, m))
        self.final_position = len(self.tokens) - 1


def answer_token(tokenizer, text: str, answer: str) -> tuple[bool, int]:
    """Decide how the answer follows ``text``: returns ``(move_space, answer_token_id)``."""
    base, _ = encode(tokenizer, text)
    with_answer, _ = encode(tokenizer, text + " " + answer)
    if with_answer[: len(base)] == base and len(with_answer) == len(base) + 1:
        return False, with_answer[-1]
    with_space, _ = encode(tokenizer, text + " ")
    if (
        with_space[: len(base)] == base
        and len(with_space) == len(base) + 1
        and with_answer[: len(with_space)] == with_space
        and len(with_answer) == len(with_space) + 1
    ):
        return True, with_answer[-1]
    raise TokenizationError(
        f"answer {' ' + answer!r} after {text[-30:]!r} is not a single token in context: pieces "
        f"{_pieces(tokenizer, with_answer[len(base) :])}"
    )


def single_token_members(tokenizer, family: str) -> list[int]:
    """Indices of ``family`` members that are one token both at the text start and after a space."""
    return [
        i
        for i, m in enumerate(FAMILIES[family])
        if single_token_id(tokenizer, m, after_space=False) is not None and single_token_id(tokenizer, m) is not None
    ]


def single_token_words(
    tokenizer, words: Sequence[str], exclude: Sequence[str] = (), at_text_start: bool = False
) -> list[str]:
    """The ``words`` (filler words, nouns) that are one token after a space, the space merged into the
    token (``" cat"``), and not in ``exclude``; with ``at_text_start`` also one token at a text's start."""
    skip = set(exclude)
    return [
        w
        for w in words
        if w not in skip
        and single_token_id(tokenizer, w, split_space=False) is not None
        and (not at_text_start or single_token_id(tokenizer, w, after_space=False) is not None)
    ]


# --------------------------------------------------------------------------- corruptions


def is_valid_sequence(indices: Sequence[int], max_step: int) -> bool:
    """Whether ``indices`` is an arithmetic progression with difference ±1..±max_step."""
    diffs = {b - a for a, b in zip(indices, indices[1:])}
    return len(diffs) == 1 and 1 <= abs(next(iter(diffs))) <= max_step


def corrupt_indices(kind: str, clean: list[int], pool: Sequence[int], rng: random.Random, max_step: int) -> list[int]:
    """Apply corruption ``kind`` to member indices ``clean`` (drawing from ``pool``).

    - ``randAll``: every member redrawn at random from the family; never a valid sequence.
    - ``switchLastTwo``: the last two members swapped.
    - ``repeatLastTwo``: the last member replaced by the one before it (the last two are equal).
    - ``repeatFirstAll``: every member replaced by the first.
    - ``repeatRand``: every member replaced by one random member of the family.
    - ``permutation``: a random reordering that is not a valid (monotone) sequence.
    - ``permutationKeepLast``: the same with the last member kept in place (the earlier members reordered),
      so the last token's value does not tell the twin apart.
    """
    n = len(clean)
    if kind == "randAll":
        for _ in range(10_000):
            out = [rng.choice(pool) for _ in range(n)]
            if not is_valid_sequence(out, max_step) and out != clean:
                return out
        raise ParameterError("randAll could not draw a non-sequence; the family is too small")
    if kind == "switchLastTwo":
        return clean[:-2] + [clean[-1], clean[-2]]
    if kind == "repeatLastTwo":
        return clean[:-1] + [clean[-2]]
    if kind == "repeatFirstAll":
        return [clean[0]] * n
    if kind == "repeatRand":
        return [rng.choice(pool)] * n
    if kind == "permutation":
        if n < 3:
            raise ParameterError(
                "permutation needs length >= 3 (with 2 members the only reordering is a valid sequence)"
            )
        for _ in range(10_000):
            out = clean[:]
            rng.shuffle(out)
            if out != clean and not is_valid_sequence(out, max_step):
                return out
        raise ParameterError("permutation could not find a non-sequence reordering")
    if kind == "permutationKeepLast":
        if n < 3:
            raise ParameterError(
                "permutationKeepLast needs length >= 3 (with one member before the last there is nothing to reorder)"
            )
        for _ in range(10_000):
            head = clean[:-1]
            rng.shuffle(head)
            out = head + clean[-1:]
            if out != clean and not is_valid_sequence(out, max_step):
                return out
        raise ParameterError("permutationKeepLast could not find a non-sequence reordering")
    raise ParameterError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")


# --------------------------------------------------------------------------- builders


def _sequence_starts(n_members: int, valid: set[int], length: int, step: int, sign: int) -> list[int]:
    starts = []
    for s in range(n_members):
        idx = [s + sign * step * k for k in range(length + 1)]
        if all(i in valid for i in idx):
            starts.append(s)
    return starts


def _describe(spec: TaskSpec) -> str:
    if spec.task == GREATER_THAN:
        return GREATER_THAN
    if spec.task == INDUCTION_COPY:
        return f"{INDUCTION_COPY} ({spec.template}, length {spec.length})"
    return f"{spec.direction} {spec.task} ({spec.template}, length {spec.length}, step {spec.step})"


def _role_part(items: Sequence, spec: TaskSpec, salt: str, what: str = "sequences", minimum: int | None = None) -> list:
    """``items`` restricted to ``spec.split``'s role (all of them without a split). Raises
    :class:`TooFewPromptsError` naming the counts when a role gets fewer than ``minimum`` (default: the
    split's ``min_sequences``)."""
    if spec.split is None:
        return list(items)
    parts = partition(items, spec.split, salt)
    need = spec.split.min_sequences if minimum is None else minimum
    counts = {role: len(part) for role, part in parts.items()}
    if min(counts.values()) < need:
        raise TooFewPromptsError(
            f"{_describe(spec)} has {len(set(items))} distinct {what} for this tokenizer; the split "
            f"{counts} gives a role fewer than the minimum {need} (choose a task with more {what}, e.g. numbers, "
            "fewer roles, or an explicit same-sequence resample)"
        )
    return parts[spec.split.role]


def _draw_plan(rng: random.Random, identities: Sequence, spec: TaskSpec) -> Callable[[int], object]:
    """Which identity prompt ``i`` uses: with ``spec.sequences = k``, ``k`` distinct identities sampled once
    and cycled (prompt ``i`` takes number ``i % k``); otherwise a fresh ``rng.choice`` per prompt."""
    if spec.sequences is None:
        return lambda i: rng.choice(identities)
    if spec.sequences > len(identities):
        raise TooFewPromptsError(
            f"{_describe(spec)}: {spec.sequences} distinct sequences asked, only "
            f"{len(identities)} available{' to split role ' + repr(spec.split.role) if spec.split else ''}"
        )
    chosen = rng.sample(list(identities), spec.sequences)
    return lambda i: chosen[i % len(chosen)]


def _family_setup(tokenizer, spec: TaskSpec) -> tuple[tuple[str, ...], set[int], list[int]]:
    """``(families, common single-token indices, valid starts)`` of a sequence-family spec (no split)."""
    sign = 1 if spec.direction == "increasing" else -1
    families = MIXED_FAMILIES if spec.template == "mixed" else (spec.task,)
    valid = {f: set(single_token_members(tokenizer, f)) for f in families}
    # In the mixed template an index must exist in every family that may be drawn for it.
    common = set.intersection(*valid.values())
    n_members = min(len(FAMILIES[f]) for f in families)
    starts = _sequence_starts(n_members, common, spec.length, spec.step, sign)
    if not starts:
        raise ParameterError(
            f"no {spec.direction} {spec.task} sequence of length {spec.length} with step {spec.step} has "
            f"all members single tokens for this tokenizer (single-token members: "
            f"{[FAMILIES[f][i] for f in families for i in sorted(valid[f])]})"
        )
    return families, common, starts


def _fillers(tokenizer, spec: TaskSpec) -> list[str]:
    """The role's ``among_words`` filler words (``[]`` for other templates)."""
    if spec.template != "among_words":
        return []
    fillers_all = single_token_words(tokenizer, FILLER_WORDS, at_text_start=True)
    if len(fillers_all) < spec.length + 1:
        raise TokenizationError(f"only {len(fillers_all)} filler words are single tokens for this tokenizer")
    return _role_part(fillers_all, spec, "fillers", "filler words", minimum=spec.length + 1)


def _build_sequence(tokenizer, spec: TaskSpec, model_name: str, prefix: Prefix) -> TaskDataset:
    rng = random.Random(
        f"{spec.task}|{spec.template}|{spec.direction}|{spec.step}|{spec.length}|"
        f"{spec.corruption}|{spec.verb}|{spec.seed}"
    )
    sign = 1 if spec.direction == "increasing" else -1
    max_step = max(3, spec.step)
    families, common, starts = _family_setup(tokenizer, spec)
    starts = _role_part(starts, spec, "sequences")
    pool = sorted(common)
    fillers_all = _fillers(tokenizer, spec)

    # mixed: the earlier members' families are drawn once per dataset (so every prompt has the same
    # token length); the last member and the answer always come from the task's family.
    family_pattern = [spec.task] * spec.length
    if spec.template == "mixed":
        family_pattern = [rng.choice(families) for _ in range(spec.length - 1)] + [spec.task]
    prompts: list[Prompt] = []
    move_space: bool | None = None
    start_of = _draw_plan(rng, starts, spec)
    for i in range(spec.n):
        start = start_of(i)
        idx = [start + sign * spec.step * k for k in range(spec.length)]
        answer_idx = start + sign * spec.step * spec.length
        fams = family_pattern
        fillers = rng.sample(fillers_all, spec.length + 1) if fillers_all else []
        bad = corrupt_indices(spec.corruption, idx, pool, rng, max_step)
        members = [FAMILIES[f][i] for f, i in zip(fams, idx)]
        bad_members = [FAMILIES[f][i] for f, i in zip(fams, bad)]
        answer = FAMILIES[fams[-1]][answer_idx]
        prompt, move_space = _member_prompt(tokenizer, spec, prefix, members, bad_members, answer, fillers, move_space)
        prompts.append(prompt)
    return _member_dataset(spec, model_name, prompts, prefix, move_space)


def _member_prompt(
    tokenizer,
    spec: TaskSpec,
    prefix: Prefix,
    members: list[str],
    bad_members: list[str],
    answer: str,
    fillers: Sequence[str],
    move_space: bool | None,
    bad_fillers: Sequence[str] | None = None,
) -> tuple[Prompt, bool]:
    """One prompt of single-token ``members`` in ``spec.template`` with its corrupted twin and ``answer`` (the
    incorrect answer: the last shown member); returns it with the answer's space policy, which must agree with
    ``move_space`` (the dataset's so far; None for the first prompt). The twin is rendered with ``bad_fillers``
    (default: the same ``fillers``)."""
    clean_r = _render(spec.template, members, fillers, spec.verb)
    bad_r = _render(spec.template, bad_members, fillers if bad_fillers is None else bad_fillers, spec.verb)
    ms, answer_id = answer_token(tokenizer, clean_r.text, answer)
    if move_space is not None and ms != move_space:
        raise TokenizationError("the tokenizer treats the answer's leading space inconsistently across prompts")
    _, incorrect_id = answer_token(tokenizer, clean_r.text, members[-1])
    clean_t = _Tokenized(tokenizer, clean_r, answer, prefix, ms, members)
    bad_t = _Tokenized(tokenizer, bad_r, answer, prefix, ms, bad_members)
    if len(bad_t.tokens) != len(clean_t.tokens) or bad_t.member_positions != clean_t.member_positions:
        raise AssertionError(f"corrupted prompt {bad_t.text!r} does not align with {clean_t.text!r}")
    prompt = Prompt(
        text=clean_t.text,
        tokens=clean_t.tokens,
        answer_id=int(answer_id),
        incorrect_id=int(incorrect_id),
        member_positions=clean_t.member_positions,
        final_position=clean_t.final_position,
        corrupted_text=bad_t.text,
        corrupted_tokens=bad_t.tokens,
        members=members,
        corrupted_members=bad_members,
        answer=answer,
        incorrect=members[-1],
    )
    return prompt, ms


def _member_dataset(
    spec: TaskSpec, model_name: str, prompts: list[Prompt], prefix: Prefix, move_space: bool | None
) -> TaskDataset:
    policy = "space-split: prompt ends with the space token" if move_space else "single-token"
    ds = TaskDataset(model_name, spec, prompts, policy, prefix=prefix)
    ds.check_uniform_length()
    return ds


# --------------------------------------------------------------------------- the control: induction copying

#: How many words the control task draws from per tokenizer (:func:`induction_words`).
INDUCTION_POOL = 200
#: The control task's sequence space: this many distinct word tuples per tokenizer and length.
INDUCTION_SEQUENCES = 240
#: The fewest single-token words a tokenizer must offer the control task.
INDUCTION_MIN_WORDS = 20
_INDUCTION_WORD_LENGTHS = range(4, 9)
_induction_words: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its words, computed once


def _lowercase_vocabulary_words(tokenizer) -> list[str]:
    """Sorted lowercase ASCII words of 4-8 letters that some vocabulary token spells, alone or after a space."""
    decoded = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return sorted(
        {
            w
            for w in (d.strip() for d in decoded)
            if w.isascii() and w.isalpha() and w.islower() and len(w) in _INDUCTION_WORD_LENGTHS
        }
    )


def induction_words(tokenizer) -> list[str]:
    """The control task's words: up to :data:`INDUCTION_POOL` lowercase vocabulary words (4-8 letters), each one
    token after a space (the space merged in) and at a text's start, none a sequence-family member, filler word or
    template verb; taken in a fixed seeded order, so a tokenizer always gives the same words (computed once per
    tokenizer: every vocabulary token is decoded). Raises :class:`TokenizationError` when fewer than
    :data:`INDUCTION_MIN_WORDS` qualify."""
    try:
        return list(_induction_words[tokenizer])
    except (KeyError, TypeError):
        pass
    skip = {m.lower() for family in FAMILIES.values() for m in family} | {w.lower() for w in FILLER_WORDS} | set(VERBS)
    candidates = [w for w in _lowercase_vocabulary_words(tokenizer) if w not in skip]
    random.Random(f"{INDUCTION_COPY}|words").shuffle(candidates)
    words: list[str] = []
    for w in candidates:
        if (
            single_token_id(tokenizer, w, split_space=False) is not None
            and single_token_id(tokenizer, w, after_space=False) is not None
        ):
            words.append(w)
            if len(words) == INDUCTION_POOL:
                break
    if len(words) < INDUCTION_MIN_WORDS:
        raise TokenizationError(
            f"{INDUCTION_COPY}: only {len(words)} lowercase vocabulary words are one token after a space and at a "
            f"text's start for this tokenizer; the control task needs {INDUCTION_MIN_WORDS}"
        )
    try:
        _induction_words[tokenizer] = words
    except TypeError:  # a tokenizer that cannot be weakly referenced: computed again next time
        pass
    return list(words)


def induction_shape(length: int) -> tuple[int, int]:
    """``(distinct, repeated)`` words of a control prompt showing ``length`` words: ``length // 2 + 1`` distinct
    words, then the first ``length - distinct`` again (5 -> ``K L M K L``: (3, 2); 4 -> ``K L M K``: (3, 1))."""
    distinct = length // 2 + 1
    return distinct, length - distinct


def induction_sequences(tokenizer, length: int) -> list[tuple[str, ...]]:
    """The control task's sequence identities: :data:`INDUCTION_SEQUENCES` distinct tuples of
    :func:`induction_shape`'s ``distinct`` words from :func:`induction_words`, in a fixed seeded order (identity
    ``i`` is tuple ``i``)."""
    words = induction_words(tokenizer)
    distinct, _ = induction_shape(length)
    rng = random.Random(f"{INDUCTION_COPY}|sequences|{length}")
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = []
    while len(out) < INDUCTION_SEQUENCES:
        t = tuple(rng.sample(words, distinct))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _build_induction(tokenizer, spec: TaskSpec, model_name: str, prefix: Prefix) -> TaskDataset:
    """The control task: ``distinct`` random words, the first ``repeated`` again; the answer is the word that
    followed the last shown one before (``K L M K L`` -> ``M``), the incorrect answer the last shown word. In
    ``among_words`` each word keeps its filler, so the repeated part repeats token for token (``Rock done in
    product. Lake done in where. Pot done in tracks. Rock done in product. Lake done in where. Pot done in`` ->
    ``tracks``). The corrupted twin shows ``length`` distinct random words (with distinct fillers): nothing
    repeats."""
    rng = random.Random(f"{spec.task}|{spec.template}|{spec.length}|{spec.corruption}|{spec.verb}|{spec.seed}")
    words = induction_words(tokenizer)
    sequences = induction_sequences(tokenizer, spec.length)
    n_distinct, repeated = induction_shape(spec.length)
    identities = _role_part(range(len(sequences)), spec, "sequences")
    fillers_all = _fillers(tokenizer, spec)
    prompts: list[Prompt] = []
    move_space: bool | None = None
    identity_of = _draw_plan(rng, identities, spec)
    for i in range(spec.n):
        distinct = sequences[identity_of(i)]
        members = [*distinct, *distinct[:repeated]]
        drawn = rng.sample(fillers_all, spec.length + 1) if fillers_all else []
        fillers = [*drawn[:n_distinct], *drawn[:repeated], *drawn[repeated : repeated + 1]]  # repeated with the words
        bad_members = rng.sample(words, spec.length)
        prompt, move_space = _member_prompt(
            tokenizer, spec, prefix, members, bad_members, distinct[repeated], fillers, move_space, drawn
        )
        prompts.append(prompt)
    return _member_dataset(spec, model_name, prompts, prefix, move_space)


def check_numbers_tokenizer(tokenizer) -> None:
    """Refuse (one-line :class:`TokenizationError` naming ``digits``) a tokenizer that spells any two-digit
    number after a space as one token (GPT-2: ``" 23"``): its numbers up to 99 are the ``digits`` task."""
    whole = [v for v in NUMBER_RANGE if single_token_id(tokenizer, str(v), split_space=False) is not None]
    if whole:
        raise TokenizationError(
            f"task {NUMBERS} predicts the units digit of two-digit numbers spelt as digit tokens, but this tokenizer "
            f"spells {len(whole)} of {len(NUMBER_RANGE)} (e.g. ' {whole[0]}') as one token: use task digits"
        )


def _number_positions(tokenizer, ids: Sequence[int], offsets, spans, members: Sequence[str]) -> list[int]:
    """Index (into ``ids``) of each two-digit member's units-digit token; raises :class:`TokenizationError`
    unless the member is exactly a tens-digit token followed by a units-digit token."""
    positions = []
    for m, span in zip(members, spans):
        hit = _token_at_span(tokenizer, ids, offsets, *span, what=f"member {m!r}")
        pieces = _pieces(tokenizer, [ids[i] for i in hit])
        if len(hit) != 2 or pieces[0].strip() != m[0] or pieces[1] != m[1]:
            raise TokenizationError(
                f"member {m!r} is not a tens-digit token + a units-digit token in context: "
                f"pieces {pieces}; use task digits for this tokenizer"
            )
        positions.append(hit[1])
    return positions


def _next_digit_token(tokenizer, text: str, digit: str) -> int:
    """The token of ``digit`` appended directly to ``text`` (after the answer's tens digit); raises
    :class:`TokenizationError` unless it is one token that leaves ``text``'s tokens unchanged."""
    base, _ = encode(tokenizer, text)
    with_digit, _ = encode(tokenizer, text + digit)
    if (
        with_digit[: len(base)] != base
        or len(with_digit) != len(base) + 1
        or tokenizer.decode([with_digit[-1]]) != digit
    ):
        raise TokenizationError(
            f"digit {digit!r} after {text[-12:]!r} is not one token of its own: pieces "
            f"{_pieces(tokenizer, with_digit[len(base) - 1 :])}; use task digits"
        )
    return with_digit[-1]


def _build_numbers(tokenizer, spec: TaskSpec, model_name: str, prefix: Prefix) -> TaskDataset:
    """Two-digit number sequences; the prompt ends after the answer's tens digit, the answer is the units digit.

    ``"23 24 25 26 2"`` -> ``"7"`` (``incorrect``: ``"6"``, the last member's units digit). Corruptions redraw
    or reorder the members among 10..99 (:func:`corrupt_indices` on the values) and keep the tens-digit tail,
    so clean and corrupted prompts align token for token. ``member_positions`` are the units-digit tokens.
    """
    check_numbers_tokenizer(tokenizer)
    rng = random.Random(
        f"{spec.task}|{spec.template}|{spec.direction}|{spec.step}|{spec.length}|"
        f"{spec.corruption}|{spec.verb}|{spec.seed}"
    )
    sign = 1 if spec.direction == "increasing" else -1
    max_step = max(3, spec.step)
    valid = set(NUMBER_RANGE)
    starts = _sequence_starts(max(NUMBER_RANGE) + 1, valid, spec.length, spec.step, sign)
    if not starts:
        raise ParameterError(
            f"no {spec.direction} sequence of {spec.length} two-digit numbers with step {spec.step} "
            f"and a two-digit answer fits in {min(NUMBER_RANGE)}..{max(NUMBER_RANGE)}"
        )
    starts = _role_part(starts, spec, "sequences")
    pool = sorted(valid)
    fillers_all = _fillers(tokenizer, spec)
    bos = prefix.ids
    prompts: list[Prompt] = []
    start_of = _draw_plan(rng, starts, spec)
    for i in range(spec.n):
        start = start_of(i)
        values = [start + sign * spec.step * k for k in range(spec.length)]
        answer_value = start + sign * spec.step * spec.length
        fillers = rng.sample(fillers_all, spec.length + 1) if fillers_all else []
        bad = corrupt_indices(spec.corruption, values, pool, rng, max_step)
        members, bad_members = [str(v) for v in values], [str(v) for v in bad]
        tail = " " + str(answer_value)[0]  # the answer's tens digit ends the prompt
        clean_r = _render(spec.template, members, fillers, spec.verb)
        bad_r = _render(spec.template, bad_members, fillers, spec.verb)
        text, bad_text = clean_r.text + tail, bad_r.text + tail
        ids, offsets = encode(tokenizer, text)
        bad_ids, bad_offsets = encode(tokenizer, bad_text)
        positions = _number_positions(tokenizer, ids, offsets, clean_r.spans, members)
        if (
            len(bad_ids) != len(ids)
            or _number_positions(tokenizer, bad_ids, bad_offsets, bad_r.spans, bad_members) != positions
        ):
            raise TokenizationError(f"corrupted prompt {bad_text!r} does not align with {text!r} token for token")
        if tokenizer.decode([ids[-1]]).strip() != tail.strip():
            raise TokenizationError(f"the tens digit {tail.strip()!r} is not the last token of {text[-12:]!r}")
        answer, incorrect = str(answer_value)[1], members[-1][1]
        prompts.append(
            Prompt(
                text=text,
                tokens=bos + ids,
                answer_id=int(_next_digit_token(tokenizer, text, answer)),
                incorrect_id=int(_next_digit_token(tokenizer, text, incorrect)),
                member_positions=[len(bos) + k for k in positions],
                final_position=len(bos) + len(ids) - 1,
                corrupted_text=bad_text,
                corrupted_tokens=bos + bad_ids,
                members=members,
                corrupted_members=bad_members,
                answer=answer,
                incorrect=incorrect,
                crosses_decade=answer_value // 10 != values[-1] // 10,
            )
        )
    ds = TaskDataset(
        model_name,
        spec,
        prompts,
        "numbers: the prompt ends with the answer's tens digit; the answer is its units digit",
        prefix=prefix,
    )
    ds.check_uniform_length()
    return ds


def greater_than_groups(tokenizer) -> tuple[str, list[list[int]]]:
    """The candidate tokens for a year's last two digits after ``"... to the year XX"``.

    Returns ``(mode, groups)``. ``mode="two_digit"`` when the tokenizer spells years as
    ``" 17"`` + ``"32"`` (GPT-2): ``groups[yy]`` is the token of ``f"{yy:02d}"``. Otherwise
    ``mode="digit"`` (one token per digit, SmolLM2): ``groups[d]`` is the token of ``str(d)``, the
    tens digit that comes next.
    """
    ids, offsets = encode(tokenizer, "the year 1732")
    yy_tokens = _token_at_span(tokenizer, ids, offsets, 11, 13, "year 1732")
    two_digit = len(yy_tokens) == 1 and offsets[yy_tokens[0]] == (11, 13)
    values = [f"{v:02d}" for v in range(100)] if two_digit else [str(d) for d in range(10)]
    groups = []
    for v in values:
        vid = encode(tokenizer, v)[0]
        if len(vid) != 1:
            raise TokenizationError(f"{v!r} is not one token for this tokenizer: {_pieces(tokenizer, vid)}")
        groups.append(vid)
    return ("two_digit" if two_digit else "digit"), groups


GREATER_THAN_TEMPLATE = "The {noun} lasted from the year {year} to the year {cc}"
#: The fewest nouns a split role of greater-than gets (the unsplit task needs 10 single-token nouns).
GREATER_THAN_MIN_NOUNS = 5


def _greater_than_split(tokenizer, mode: str, noun: str, century: int, yy: int):
    """``(ids, yy token indices, corrupted ids, corrupted yy indices)`` of one greater-than prompt."""
    year = century * 100 + yy
    text = GREATER_THAN_TEMPLATE.format(noun=noun, year=year, cc=century)
    corrupted = GREATER_THAN_TEMPLATE.format(noun=noun, year=f"{century}01", cc=century)
    ids, offsets = encode(tokenizer, text)
    bad_ids, bad_offsets = encode(tokenizer, corrupted)
    year_start = text.index(str(year))
    yy_span = (year_start + 2, year_start + 4)
    hit = _token_at_span(tokenizer, ids, offsets, *yy_span, what=f"year {year}")
    bad_hit = _token_at_span(tokenizer, bad_ids, bad_offsets, *yy_span, what=f"year {century}01")
    return ids, hit, bad_ids, bad_hit


def greater_than_years(tokenizer) -> list[int]:
    """The greater-than sequence space: start years XXYY (centuries 10..18; YY in 02..98 when the tokenizer
    spells YY as one token, else 10..89) whose YY and ``"01"`` twin split as the mode expects, at the
    most common prompt length (every prompt of a dataset has one length)."""
    mode, _ = greater_than_groups(tokenizer)
    noun = single_token_words(tokenizer, GREATER_THAN_NOUNS)[0]
    expected = 1 if mode == "two_digit" else 2
    yys = range(2, 99) if mode == "two_digit" else range(10, 90)
    by_length: dict[int, list[int]] = {}
    for century in range(10, 19):
        for yy in yys:
            ids, hit, bad_ids, bad_hit = _greater_than_split(tokenizer, mode, noun, century, yy)
            if len(ids) == len(bad_ids) and hit == bad_hit and len(hit) == expected:
                by_length.setdefault(len(ids), []).append(century * 100 + yy)
    if not by_length:
        raise TokenizationError("no greater-than year splits consistently for this tokenizer")
    return max(by_length.values(), key=len)


def _build_greater_than(tokenizer, spec: TaskSpec, model_name: str, prefix: Prefix) -> TaskDataset:
    """Greater-than prompts; years whose tokenization does not split as the mode expects are redrawn."""
    rng = random.Random(f"greater_than|{spec.seed}")
    nouns = single_token_words(tokenizer, GREATER_THAN_NOUNS)
    if len(nouns) < 10:
        raise TokenizationError("too few single-token nouns for the greater-than template")
    nouns = _role_part(nouns, spec, "nouns", "nouns", minimum=GREATER_THAN_MIN_NOUNS)
    template = GREATER_THAN_TEMPLATE
    mode, groups = greater_than_groups(tokenizer)
    bos = prefix.ids
    prompts: list[Prompt] = []
    length: int | None = None
    attempts = 0
    # With a split or a number of sequences, years come from the space of years that tokenize consistently
    # (the role's part of it); otherwise each prompt draws a century and YY afresh (redrawn if it splits oddly).
    year_of = None
    if spec.split is not None or spec.sequences is not None:
        year_of = _draw_plan(rng, _role_part(greater_than_years(tokenizer), spec, "sequences", "years"), spec)
    while len(prompts) < spec.n:
        attempts += 1
        if attempts > 100 * spec.n:
            raise TokenizationError("could not draw greater-than prompts whose years split consistently")
        noun = rng.choice(nouns)
        if year_of is not None:
            century, yy = divmod(year_of(len(prompts)), 100)
        else:
            century = rng.randrange(10, 19)
            # Hanna et al. draw YY in 02..98 so that the "01" corruption is always smaller; with digit
            # tokens the tens digit is scored, so YY in 10..89 keeps a larger and a smaller tens digit.
            yy = rng.randrange(2, 99) if mode == "two_digit" else rng.randrange(10, 90)
        year = century * 100 + yy
        text = template.format(noun=noun, year=year, cc=century)
        corrupted = template.format(noun=noun, year=f"{century}01", cc=century)
        ids, offsets = encode(tokenizer, text)
        bad_ids, bad_offsets = encode(tokenizer, corrupted)
        year_start = text.index(str(year))
        yy_span = (year_start + 2, year_start + 4)
        hit = _token_at_span(tokenizer, ids, offsets, *yy_span, what=f"year {year}")
        bad_hit = _token_at_span(tokenizer, bad_ids, bad_offsets, *yy_span, what=f"year {century}01")
        expected = 1 if mode == "two_digit" else 2
        if len(ids) != len(bad_ids) or hit != bad_hit or len(hit) != expected or (length and len(ids) != length):
            continue  # this year (or its "01" twin) splits differently: redraw
        length = len(ids)
        if mode == "two_digit":
            answer, incorrect = f"{min(yy + 1, 99):02d}", f"{yy:02d}"
            answer_tok, incorrect_tok = groups[min(yy + 1, 99)][0], groups[yy][0]
        else:
            answer, incorrect = str(yy // 10 + 1), str(yy // 10 - 1)
            answer_tok, incorrect_tok = groups[yy // 10 + 1][0], groups[yy // 10 - 1][0]
        prompts.append(
            Prompt(
                text=text,
                tokens=bos + ids,
                answer_id=int(answer_tok),
                incorrect_id=int(incorrect_tok),
                member_positions=[len(bos) + i for i in hit],
                final_position=len(bos) + len(ids) - 1,
                corrupted_text=corrupted,
                corrupted_tokens=bos + bad_ids,
                members=[f"{yy:02d}"],
                corrupted_members=["01"],
                answer=answer,
                incorrect=incorrect,
                year=year,
            )
        )
    ds = TaskDataset(model_name, spec, prompts, f"greater-than {mode}", groups, prefix)
    ds.check_uniform_length()
    return ds


def make_dataset(tokenizer, task: str = "digits", *, model_name: str = "", **kwargs) -> TaskDataset:
    """Build a seeded dataset for ``task`` with ``tokenizer``.

    Keyword arguments are :class:`TaskSpec` fields (``template, direction, step, length,
    corruption, n, seed, verb, prefix``). ``prefix`` (:data:`PREFIX_MODES`, default ``"document"``)
    picks the token every prompt starts with (:func:`resolve_prefix`); ``tokens[0]`` is its id
    unless ``prefix="none"``. The same arguments and tokenizer always give the same dataset.
    """
    unknown = set(kwargs) - set(TaskSpec.__dataclass_fields__)
    if unknown:
        raise ParameterError(
            f"unknown dataset option(s) {sorted(unknown)}; valid: {sorted(TaskSpec.__dataclass_fields__)}"
        )
    spec = TaskSpec(task=task, **kwargs)
    spec.validate()
    prefix = resolve_prefix(tokenizer, spec.prefix)
    if task == GREATER_THAN:
        return _build_greater_than(tokenizer, spec, model_name, prefix)
    if task == NUMBERS:
        return _build_numbers(tokenizer, spec, model_name, prefix)
    if task == INDUCTION_COPY:
        return _build_induction(tokenizer, spec, model_name, prefix)
    return _build_sequence(tokenizer, spec, model_name, prefix)


def sequence_space(tokenizer, task: str = "digits", **kwargs) -> list[int]:
    """Every sequence identity a dataset of these options can draw, before any split: the start values
    (member indices; for ``numbers`` the first number) of valid sequences, or greater-than start years.
    Keyword arguments are :class:`TaskSpec` fields (``n``, ``seed``, ``corruption`` and ``split`` do not matter)."""
    spec = TaskSpec(task=task, **{k: v for k, v in kwargs.items() if k != "split"})
    spec.validate()
    if task == GREATER_THAN:
        return greater_than_years(tokenizer)
    if task == INDUCTION_COPY:
        return list(range(len(induction_sequences(tokenizer, spec.length))))
    sign = 1 if spec.direction == "increasing" else -1
    if task == NUMBERS:
        check_numbers_tokenizer(tokenizer)
        return _sequence_starts(max(NUMBER_RANGE) + 1, set(NUMBER_RANGE), spec.length, spec.step, sign)
    return _family_setup(tokenizer, spec)[2]


#: Dataset seeds of a split's roles: role ``i`` is drawn with ``seed + i * ROLE_SEED_OFFSET`` (discovery ``seed``,
#: held-out ``seed + 1000``, as the discovery pipeline's held-out seed).
ROLE_SEED_OFFSET = 1000


def make_split_datasets(
    tokenizer,
    task: str = "digits",
    *,
    roles: Sequence[str] = SPLIT_ROLES,
    shares: Sequence[int] | None = None,
    seed: int = 0,
    min_sequences: int = MIN_SEQUENCES_PER_ROLE,
    sizes: dict[str, dict] | None = None,
    model_name: str = "",
    **kwargs,
) -> dict[str, TaskDataset]:
    """One dataset per role of a sequence-disjoint split: ``{role: TaskDataset}``, no two sharing a sequence
    identity (nor an ``among_words`` filler or greater-than noun).

    The split is seeded by ``seed`` (role ``i``'s prompts by ``seed + i * ROLE_SEED_OFFSET``); ``shares`` gives
    the roles' relative numbers of identities (equal when None). ``kwargs`` are :class:`TaskSpec` options
    for every role; ``sizes`` overrides them per role, e.g. ``{"heldout": {"n": 48, "sequences": 24}}``.
    Raises :class:`TooFewPromptsError` (naming the counts) when a role gets fewer than ``min_sequences``.
    """
    sizes = dict(sizes or {})
    if "split" in kwargs or any({"split", "seed"} & set(v) for v in sizes.values()):
        raise ParameterError("make_split_datasets sets each role's split and seed itself; pass roles, shares and seed")
    unknown = sorted(set(sizes) - set(roles))
    if unknown:
        raise ParameterError(f"sizes for unknown role(s) {unknown}; valid: {', '.join(roles)}")
    out = {}
    for i, role in enumerate(roles):
        split = Split(role, tuple(roles), tuple(shares) if shares is not None else None, seed, min_sequences)
        options = dict(kwargs) | sizes.get(role, {})
        out[role] = make_dataset(
            tokenizer, task, model_name=model_name, seed=seed + i * ROLE_SEED_OFFSET, split=split, **options
        )
    return out


def sequence_overlap(a: TaskDataset, b: TaskDataset) -> int:
    """How many sequence identities ``a`` and ``b`` share (0 for the two sides of a split)."""
    return len(set(a.sequence_ids) & set(b.sequence_ids))


def filter_to_correct(model, dataset: TaskDataset, batch_size: int = 64) -> TaskDataset:
    """Keep prompts whose top-1 is the answer and p(correct) > 2 p(incorrect) (the paper's filter)."""
    from seqcirc_utils.models.forward import final_logits

    logits = final_logits(model, dataset.tokens, batch_size=batch_size)  # on the model's device
    probs = logits.softmax(-1)
    rows = torch.arange(len(dataset), device=logits.device)
    answer_ids = dataset.answer_ids.to(logits.device)
    p_correct = probs[rows, answer_ids]
    p_incorrect = probs[rows, dataset.incorrect_ids.to(logits.device)]
    keep = (logits.argmax(-1) == answer_ids) & (p_correct > 2 * p_incorrect)
    return dataset.subset(keep.nonzero().flatten().tolist())


def filter_to_year_continuation(model, dataset: TaskDataset, batch_size: int = 64) -> TaskDataset:
    """Greater-than under the probability difference: keep prompts whose top-1 next token spells a
    year value (any of ``greater_than_groups``: a two-digit ``YY`` or a digit), whichever value it is.

    No particular value is required (the PD itself measures how much mass lies above ``YY``), so the
    filter drops only prompts the model does not continue with a year at all.
    """
    from seqcirc_utils.models.forward import final_logits

    if dataset.task != GREATER_THAN:
        raise ParameterError(f"filter_to_year_continuation is for task {GREATER_THAN}, not {dataset.task}")
    logits = final_logits(model, dataset.tokens, batch_size=batch_size)
    year_ids = torch.tensor(sorted({i for g in dataset.greater_than_groups for i in g}), device=logits.device)
    keep = torch.isin(logits.argmax(-1), year_ids)
    return dataset.subset(keep.nonzero().flatten().tolist())


DatasetFactory = Callable[..., TaskDataset]
