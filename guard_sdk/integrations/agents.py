"""OpenAI Agents SDK guardrails backed by a ``Guard``: ``input_guardrail(guard)`` and ``output_guardrail(guard)``.

    from agents import Agent, InputGuardrailTripwireTriggered, Runner
    from guard_sdk.integrations.agents import input_guardrail, output_guardrail

    agent = Agent(name="support", instructions="...",
                  input_guardrails=[input_guardrail(guard)], output_guardrails=[output_guardrail(guard)])
    try:
        result = await Runner.run(agent, "...")
    except InputGuardrailTripwireTriggered as tripped:
        tripped.guardrail_result.output.output_info     # {"stage": "input", "blocked": True, "results": [...]}

Both return the SDK's own ``InputGuardrail`` / ``OutputGuardrail``. The tripwire is triggered when the guard blocks:
a text was flagged, or (fail-closed) the check failed or timed out (``fail_open`` allows a failed one). Its
``output_info`` carries every result as JSON-able data (``CheckResult`` fields plus ``source``). Checks run on the
guard's worker threads (``Guard.acheck``), so the agent loop is never blocked.

- The input guardrail reads the agent's input: a str, or a list of input items, each text checked as
  ``guard.wrap`` checks a Responses request's input (every string of messages, tool calls and tool outputs; system
  and developer messages only with ``check_system``).
- The output guardrail reads the agent's final output: a str, or a structured output as its JSON. It passes the run's
  input (``RunContextWrapper.turn_input``) as the context of guards that judge an answer in context.

An input the guard refuses to check (over its limits, of no known shape) raises the guard's ``InputError`` from the
run rather than trip the wire: the problem is the input's shape, not its content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic_core

from .._enforce import Decision, Enforcer, Piece
from .._errors import ExtraNotInstalledError, GuardViolation

try:
    import agents
    from agents import Agent, GuardrailFunctionOutput, InputGuardrail, OutputGuardrail, RunContextWrapper
except ImportError as exc:
    raise ExtraNotInstalledError("guard_sdk.integrations.agents", "openai-agents", "agents") from exc

from .openai import request_context, responses_request_pieces

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agents import TResponseInputItem

    from .._context import Context
    from .._enforce import SourcedResult
    from .._guard import Guard
    from .._result import Stage

__all__ = ["input_guardrail", "output_guardrail"]


def input_guardrail(
    guard: Guard,
    *,
    name: str = "guard_sdk_input",
    run_in_parallel: bool = True,
    check_system: bool = False,
    timeout: float | None = 5.0,
    fail_open: bool = False,
    on_decision: Callable[[Decision], None] | None = None,
) -> InputGuardrail[Any]:
    """An ``InputGuardrail`` that checks the agent's input with ``guard`` at the ``input`` stage.

    Args:
        name: the guardrail's name in traces and results.
        run_in_parallel: run beside the agent's first model call (the SDK's default), or before it.
        check_system: also check system and developer messages of an input list.
        timeout, fail_open, on_decision: ``guard_sdk.Enforcer``'s.
    """
    enforcer = Enforcer(guard, timeout=timeout, fail_open=fail_open, on_decision=on_decision)

    async def check_input(
        context: RunContextWrapper[Any], agent: Agent[Any], input: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        items = input if isinstance(input, str) else list(input)
        return await _tripwire(enforcer, responses_request_pieces({"input": items}, check_system=check_system), "input")

    return agents.input_guardrail(name=name, run_in_parallel=run_in_parallel)(check_input)


def output_guardrail(
    guard: Guard,
    *,
    name: str = "guard_sdk_output",
    timeout: float | None = 5.0,
    fail_open: bool = False,
    on_decision: Callable[[Decision], None] | None = None,
) -> OutputGuardrail[Any]:
    """An ``OutputGuardrail`` that checks the agent's final output with ``guard`` at the ``output`` stage, with the
    run's input as its context.

    Args:
        name: the guardrail's name in traces and results.
        timeout, fail_open, on_decision: ``guard_sdk.Enforcer``'s.
    """
    enforcer = Enforcer(guard, timeout=timeout, fail_open=fail_open, on_decision=on_decision)

    async def check_output(context: RunContextWrapper[Any], agent: Agent[Any], output: Any) -> GuardrailFunctionOutput:
        text = output if isinstance(output, str) else pydantic_core.to_json(output).decode()
        request = request_context(context.turn_input, "input") if context.turn_input else None
        return await _tripwire(enforcer, [Piece("final_output", text)], "output", request)

    return agents.output_guardrail(name=name)(check_output)


async def _tripwire(
    enforcer: Enforcer, pieces: list[Piece], stage: Stage, context: Context | None = None
) -> GuardrailFunctionOutput:
    try:
        decision = await enforcer.acheck(pieces, stage, context)
    except GuardViolation as violation:
        return GuardrailFunctionOutput(output_info=_info(stage, True, violation.results), tripwire_triggered=True)
    return GuardrailFunctionOutput(output_info=_info(stage, False, decision.results), tripwire_triggered=False)


def _info(stage: Stage, blocked: bool, results: Sequence[SourcedResult]) -> dict[str, Any]:
    """``blocked`` is the tripwire; with ``fail_open`` a failed check is allowed, although its result is flagged."""
    return {"stage": stage, "blocked": blocked, "results": [result.model_dump(mode="json") for result in results]}
