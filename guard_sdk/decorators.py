"""Guard an application's own functions: check text parameters before the call and the text it returns or yields.

    @guarded(guard, input="question", output=True, on_fail="refuse")
    def answer(question: str) -> str: ...

    @guarded(guard, output=True)
    async def stream_answer(question: str) -> AsyncIterator[str]: ...   # async generators and generators too

Input parameters may hold a str, None (nothing to check) or a sequence of str. With ``output=True`` the function
returns a str (or None), or is a (async) generator yielding str pieces, checked in windows as they arrive and held back
until checked (see ``guard_sdk._streaming``). A blocked input skips the call; ``refuse`` makes the function return (or
yield) the refusal text instead. Generators are checked when iteration starts, like any generator body.

The output check gets the checked input texts as its context (the request the output answers), joined by lines in
the order of ``input``. A guard that judges answers in context (``input.kind`` ``exchange``) keeps the request's last
``context_tokens`` tokens, so with several inputs name the question last (``input=["document", "question"]``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._enforce import Enforcer, Piece
from ._errors import InputTypeError
from ._streaming import StreamGuard

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._enforce import EnforceOptions
    from ._guard import Guard

__all__ = ["guarded"]

F = TypeVar("F", bound=Callable[..., Any])


def guarded(
    guard: Guard, *, input: str | Sequence[str] = (), output: bool = False, **options: Unpack[EnforceOptions]
) -> Callable[[F], F]:
    """Decorator: check the named text parameters (``input``) and/or the returned or yielded text (``output``).

    Options (``on_fail``, ``refusal``, ``fail_open``, ``timeout``, ``stream_chunk_chars``, ``stream_context_chars``,
    ``on_decision``) are those of ``Enforcer``; the default on a violation is to raise ``GuardViolation``.
    """
    names = [input] if isinstance(input, str) else list(input)
    if not names and not output:
        raise ValueError("guarded() needs input=<parameter name(s)>, output=True, or both")
    enforcer = Enforcer(guard, **options)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        if unknown := [name for name in names if name not in signature.parameters]:
            raise ValueError(
                f"{fn.__qualname__} has no parameter {unknown}; its parameters are {list(signature.parameters)}"
            )

        def input_pieces(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Piece]:
            if not names:
                return []
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return [piece for name in names for piece in _argument_pieces(name, bound.arguments[name])]

        def output_guard(pieces: list[Piece]) -> StreamGuard[str]:
            return StreamGuard(enforcer, texts=_yielded, refusal_item=str, context=_request(pieces))

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def guarded_async_generator(*args: Any, **kwargs: Any) -> Any:
                pieces = input_pieces(args, kwargs)
                if names:
                    refusal = (await enforcer.acheck(pieces, "input")).refusal
                    if refusal is not None:
                        yield refusal
                        return
                inner = fn(*args, **kwargs)
                try:
                    async for item in output_guard(pieces).arun(inner) if output else inner:
                        yield item
                finally:
                    await inner.aclose()

            return guarded_async_generator  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def guarded_generator(*args: Any, **kwargs: Any) -> Any:
                pieces = input_pieces(args, kwargs)
                if names:
                    refusal = enforcer.check(pieces, "input").refusal
                    if refusal is not None:
                        yield refusal
                        return
                inner = fn(*args, **kwargs)
                try:
                    yield from output_guard(pieces).run(inner) if output else inner
                finally:
                    inner.close()

            return guarded_generator  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_coroutine(*args: Any, **kwargs: Any) -> Any:
                pieces = input_pieces(args, kwargs)
                if names:
                    refusal = (await enforcer.acheck(pieces, "input")).refusal
                    if refusal is not None:
                        return refusal
                value = await fn(*args, **kwargs)
                if output and value is not None:
                    refusal = (await enforcer.acheck([_returned(value)], "output", _request(pieces))).refusal
                    if refusal is not None:
                        return refusal
                return value

            return guarded_coroutine  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded_function(*args: Any, **kwargs: Any) -> Any:
            pieces = input_pieces(args, kwargs)
            if names:
                refusal = enforcer.check(pieces, "input").refusal
                if refusal is not None:
                    return refusal
            value = fn(*args, **kwargs)
            if output and value is not None:
                refusal = enforcer.check([_returned(value)], "output", _request(pieces)).refusal
                if refusal is not None:
                    return refusal
            return value

        return guarded_function  # type: ignore[return-value]

    return decorate


def _argument_pieces(name: str, value: object) -> list[Piece]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Piece(f"argument {name}", value)]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return [Piece(f"argument {name}[{i}]", item) for i, item in enumerate(value)]
    raise InputTypeError(f"guarded(input={name!r}) checks str (or a sequence of str); {name} is {type(value).__name__}")


def _request(pieces: list[Piece]) -> str | None:
    """What the output answers: the checked input texts, one per line; None when no input is checked."""
    texts = [piece.text for piece in pieces if piece.text]
    return "\n".join(texts) if texts else None


def _returned(value: object) -> Piece:
    if not isinstance(value, str):
        raise InputTypeError(f"guarded(output=True) checks a returned str, got {type(value).__name__}")
    return Piece("return value", value)


def _yielded(item: object) -> list[tuple[str, str]]:
    if not isinstance(item, str):
        raise InputTypeError(f"guarded(output=True) checks yielded str pieces, got {type(item).__name__}")
    return [("yielded text", item)]
