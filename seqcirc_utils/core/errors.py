"""The errors a user can cause: one family, :class:`SeqcircError`.

The command line prints a :class:`SeqcircError` as one line and exits 2; notebooks catch only these
(a task that cannot be run on this model or these sizes is reported as such). Anything else raised by the
package is a bug and shows its traceback. Each message says what is valid.
"""

from __future__ import annotations


class SeqcircError(Exception):
    """A user error: bad input, or a request this model and these sizes cannot satisfy."""


class ParameterError(SeqcircError):
    """A parameter outside its valid values (the message names them)."""


class BadFileError(SeqcircError):
    """An input file that is missing, unreadable, or not the record kind expected."""


class ModelUnavailableError(SeqcircError):
    """A model cannot be loaded here (no network, not cached, or its package is missing)."""


class TokenizationError(SeqcircError):
    """A member or answer is not a single token in context (the task does not fit this tokenizer)."""


class TooFewPromptsError(SeqcircError):
    """Fewer prompts (or distinct sequences) than required pass the filter or fit a split."""


class BaselineError(SeqcircError):
    """A metric baseline that makes a ratio meaningless (e.g. a non-positive full-model logit difference)."""


class MissingExtraError(SeqcircError):
    """A command needs an optional extra that is not installed (the message names the pip command)."""
