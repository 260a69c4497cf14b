"""Guarding streamed output: windowed checks while text arrives, and a full check at the end.

Text arrives in channels (each choice's content, each tool call's arguments, or a generator's yielded text). Every
``chunk_chars`` new characters, each channel's new text is checked together with the ``context_chars`` before it, so
a violation split across two chunks is seen whole. Items are held back until a check covering them passed: nothing
unchecked reaches the caller. When the stream ends, each channel's full text is checked again.
Every check carries the request the stream answers, for guards that judge an answer in context.

On a violation the stream stops: the ``raise`` action raises ``GuardViolation`` from the iteration; ``refuse``
(or a callback returning a text) ends it with one refusal item instead of the held-back ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Generic, TypeVar

from ._context import Context
from ._enforce import Decision, Enforcer, Piece

__all__ = ["StreamGuard", "StreamText"]

T = TypeVar("T")


class StreamText:
    """The text of a stream so far, per channel, and how much of it a check has covered."""

    def __init__(self, chunk_chars: int, context_chars: int) -> None:
        self.chunk_chars = chunk_chars
        self.context_chars = context_chars
        self._texts: dict[str, list[str]] = {}
        self._length: dict[str, int] = {}
        self._checked: dict[str, int] = {}
        self._unchecked = 0

    def add(self, channel: str, text: str) -> None:
        self._texts.setdefault(channel, []).append(text)
        self._length[channel] = self._length.get(channel, 0) + len(text)
        self._unchecked += len(text)

    @property
    def due(self) -> bool:
        """Enough new text arrived for a window check."""
        return self._unchecked >= self.chunk_chars

    def windows(self) -> list[Piece]:
        """Each channel's unchecked text with the context before it; marks it as covered."""
        pieces = []
        for channel, length in self._length.items():
            checked = self._checked.get(channel, 0)
            if length > checked:
                start = max(0, checked - self.context_chars)
                pieces.append(Piece(f"{channel}[{start}:{length}]", self.text(channel)[start:]))
                self._checked[channel] = length
        self._unchecked = 0
        return pieces

    def full(self) -> list[Piece]:
        """Every channel's whole text, for the final check."""
        return [Piece(channel, self.text(channel)) for channel in self._texts]

    def text(self, channel: str) -> str:
        parts = self._texts[channel]
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0]


class StreamGuard(Generic[T]):
    """Guards a stream of items of type T (chunks, text pieces) with one Enforcer.

    Args:
        enforcer: checks and acts.
        texts: the (channel, text) pairs an item adds.
        refusal_item: the item that ends a refused stream, made from the refusal text.
        on_decision: called with every decision, e.g. to attach its results to the stream object.
        context: the request the stream answers (or the conversation's messages), passed to every check.
    """

    def __init__(
        self,
        enforcer: Enforcer,
        texts: Callable[[T], Iterable[tuple[str, str]]],
        refusal_item: Callable[[str], T],
        on_decision: Callable[[Decision], None] | None = None,
        context: Context | None = None,
    ) -> None:
        self._enforcer = enforcer
        self._context = context
        self._texts = texts
        self._refusal_item = refusal_item
        self._on_decision = on_decision
        self._text = StreamText(enforcer.stream_chunk_chars, enforcer.stream_context_chars)
        self._held: list[T] = []

    def _hold(self, item: T) -> None:
        self._held.append(item)
        for channel, text in self._texts(item):
            if text:
                self._text.add(channel, text)

    def _release(self, decision: Decision) -> tuple[list[T], bool]:
        """What to yield after a decision, and whether the stream ends there (refused)."""
        if self._on_decision is not None:
            self._on_decision(decision)
        if decision.refusal is not None:
            self._held.clear()
            return [self._refusal_item(decision.refusal)], True
        released, self._held = self._held, []
        return released, False

    def run(self, items: Iterator[T]) -> Iterator[T]:
        """The guarded stream; checks run in the consuming thread."""
        for item in items:
            self._hold(item)
            if self._text.due:
                released, refused = self._release(self._enforcer.check(self._text.windows(), "output", self._context))
                yield from released
                if refused:
                    return
        released, _ = self._release(self._enforcer.check(self._text.full(), "output", self._context))
        yield from released

    async def arun(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The guarded async stream; checks do not block the event loop."""
        async for item in items:
            self._hold(item)
            if self._text.due:
                decision = await self._enforcer.acheck(self._text.windows(), "output", self._context)
                released, refused = self._release(decision)
                for held in released:
                    yield held
                if refused:
                    return
        released, _ = self._release(await self._enforcer.acheck(self._text.full(), "output", self._context))
        for held in released:
            yield held
