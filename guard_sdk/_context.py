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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._errors import InputTypeError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Context", "ContextKind", "context_chars", "last_tokens", "render", "validate"]

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


def context_chars(context: object) -> int:
    """Characters a context holds (0 for anything that is not one), to size a check before it is validated."""
    if isinstance(context, str):
        return len(context)
    if not isinstance(context, Sequence):
        return 0
    return sum(
        len(content)
        for message in context
        if isinstance(message, Mapping) and isinstance(content := message.get("content"), str)
    )


def last_tokens(tokenizer: Tokenizer, texts: Sequence[str], keep: int) -> list[str]:
    """Each text cut to its last ``keep`` tokens, at the start of a word: the cut text tokenizes to those tokens (or
    a few fewer), so the pair built from it holds at most ``keep`` of the context's tokens. ``tokenizer`` must not
    truncate. One tokenization of each text, with offsets: linear in its length."""
    cut = list(texts)
    for i, encoding in enumerate(tokenizer.encode_batch(cut, add_special_tokens=False)):
        count = len(encoding)
        if count <= keep:
            continue
        words = encoding.word_ids
        start = count - keep
        # A word cut in two would tokenize differently (``##ing`` alone is ``ing``): start at the next whole word.
        while start < count and words[start] is not None and words[start] == words[start - 1]:
            start += 1
        cut[i] = cut[i][encoding.offsets[start][0] :] if start < count else ""
    return cut
