"""What a check reads besides its text: the request an answer answers, or the turns before the latest one.

A context is a str (the request) or a sequence of messages, earlier turns first: mappings with a ``role`` str and a
``content`` str (or None, for a turn that carries no text, such as an assistant turn that only called tools). openai
chat messages with str content are such mappings. A guard reads it as its bundle's ``input.kind`` says
(``guard_sdk._bundle``):

- ``exchange``: the request, i.e. the content of the last ``user`` message (a str is the request itself; messages
  without a user turn give ``""``);
- ``conversation``: every turn, one per line as ``{role}: {content}`` (a str is one ``user`` turn);
- ``text``: nothing, the context is ignored.

Of what it reads, a guard keeps the last ``context_tokens`` tokens (``last_tokens``): the ask usually ends a request.
It reads those from at most the last ``CONTEXT_CHARS`` characters (``context_text``), so a long conversation costs
what a short one does and is never refused for its length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._errors import InputTypeError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CONTEXT_CHARS",
    "GATE_REQUEST_TOKENS",
    "Context",
    "ContextKind",
    "context_text",
    "last_tokens",
    "render",
    "validate",
]

# The characters of a context a guard reads, from its end: the last context_tokens tokens of prose lie well inside
# them (about 5 characters a token; a 512-token window keeps fewer). Only runs of whitespace or invisible characters
# could push the text before them out of view, as filler text of any kind can.
CONTEXT_CHARS = 16_384
# What a request gate's guard reads of a request (``input.request_gate``): its last tokens, a few windows. Filler of
# a few hundred words around an ask is read through, and the work a gate adds to an output check stays bounded.
GATE_REQUEST_TOKENS = 512

# last_tokens first tokenizes this many characters per kept token of a text's end: prose averages 4-5 per token.
_TAIL_CHARS_PER_TOKEN = 16

Context = str | Sequence[Mapping[str, Any]]
"""A request (str), or the messages of a conversation, earlier turns first (e.g. openai chat messages)."""
ContextKind = Literal["exchange", "conversation"]


def validate(context: object, where: str = "context") -> None:
    """Raise ``InputTypeError`` unless ``context`` is None, a str or a sequence of messages with str roles and str
    (or None) contents."""
    if context is None or isinstance(context, str):
        return
    if isinstance(context, (bytes, bytearray, Mapping)) or not isinstance(context, Sequence):
        raise InputTypeError(
            f"{where} must be a str (the request) or a sequence of messages (dicts with 'role' and 'content'), "
            f"got {type(context).__name__}"
        )
    for i, message in enumerate(context):
        if not isinstance(message, Mapping):
            raise InputTypeError(
                f"{where}[{i}] must be a message (a dict with 'role' and 'content'), got {type(message).__name__}"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str):
            raise InputTypeError(f"{where}[{i}] needs a str 'role', got {type(role).__name__}")
        if content is not None and not isinstance(content, str):
            raise InputTypeError(
                f"{where}[{i}] has a 'content' of type {type(content).__name__}; a context message's content is a "
                "str (join the text of content parts first) or None"
            )


def render(context: Context | None, kind: ContextKind) -> str:
    """The text a guard of ``kind`` reads from a validated context; ``""`` for None."""
    if context is None:
        return ""
    if isinstance(context, str):
        return context if kind == "exchange" else f"user: {context}"
    if kind == "exchange":
        for message in reversed(context):
            if message["role"] == "user":
                return str(message.get("content") or "")
        return ""
    return "\n".join(f"{message['role']}: {message['content']}" for message in context if message.get("content"))


def context_text(context: Context | None, kind: ContextKind) -> str:
    """What a guard of ``kind`` reads of a validated context: ``render``'s text, at most its last ``CONTEXT_CHARS``
    characters (of a conversation, only the turns those hold are rendered)."""
    if context is None or isinstance(context, str) or kind == "exchange":
        return render(context, kind)[-CONTEXT_CHARS:]
    turns: list[Mapping[str, Any]] = []
    chars = 0
    for message in reversed(context):
        if chars > CONTEXT_CHARS:
            break
        if content := message.get("content"):
            turns.append(message)
            chars += len(message["role"]) + len(content) + 3  # "role: content\n"
    return render(turns[::-1], kind)[-CONTEXT_CHARS:]


def last_tokens(tokenizer: Tokenizer, texts: Sequence[str], keep: int) -> list[str]:
    """Each text cut to its last ``keep`` tokens, at the start of a word: the cut text tokenizes to those tokens (or
    a few fewer), so the pair built from it holds at most ``keep`` of the context's tokens. ``tokenizer`` must not
    truncate.

    Only a tail of a long text is tokenized, longer (four times each round) until the tokens after the tail's first
    word, which the cut may have split, hold the last ``keep``: the tokenizer normalises and splits text within
    words, so those are the whole text's tokens. The work is linear in the tail, about ``keep`` tokens for prose,
    however long the text."""
    cut = list(texts)
    pending = list(range(len(cut)))
    chars = max(1, keep) * _TAIL_CHARS_PER_TOKEN
    while pending:
        tails = [cut[i][-chars:] for i in pending]
        longer = []
        for i, tail, encoding in zip(pending, tails, tokenizer.encode_batch(tails, add_special_tokens=False)):
            whole, count = len(tail) == len(cut[i]), len(encoding)
            start = count - keep
            if start <= 0 or (not whole and encoding.token_to_word(start) == encoding.token_to_word(0)):
                if not whole:  # fewer than keep whole-word tokens in the tail: a longer one
                    longer.append(i)
                continue
            # A word cut in two would tokenize differently (``##ing`` alone is ``ing``): start at the next whole word.
            word = encoding.token_to_word
            while start < count and word(start) is not None and word(start) == word(start - 1):
                start += 1
            cut[i] = tail[encoding.token_to_chars(start)[0] :] if start < count else ""
        pending, chars = longer, chars * 4
    return cut
