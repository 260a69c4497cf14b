"""Type-checked, never run: what a type checker tells users of guard_sdk's public API.

`tests/test_typing.py` runs mypy --strict on this file and on guard_sdk. `assert_type` pins what each call returns
(the overloads on `Guard.wrap` and on `stream=`, the decorator keeping the function's signature); a line ending in
`# type: ignore[code]` is a call the API must reject, and mypy's `warn_unused_ignores` fails the test when it no
longer does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import agents
import litellm.integrations.custom_guardrail
import openai
from openai.types.chat import ChatCompletionChunk
from typing_extensions import assert_type

import guard_sdk
from guard_sdk import CheckResult, Decision, Guard, GuardViolation, LabelScore, guarded
from guard_sdk.bundle import RequestGate
from guard_sdk.integrations.agents import input_guardrail, output_guardrail
from guard_sdk.integrations.litellm import GuardSdkGuardrail
from guard_sdk.integrations.openai import (
    GuardedAsyncOpenAI,
    GuardedAsyncStream,
    GuardedChatCompletion,
    GuardedOpenAI,
    GuardedResponse,
    GuardedStream,
)

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def checks(guard: Guard) -> None:
    result = guard.check("text", stage="output")
    assert_type(result, CheckResult)
    assert_type(result.flagged, bool)
    assert_type(result.violations, list[LabelScore])
    assert_type(result.score("injection").score, float)
    assert_type(guard.check_batch(["a", "b"]), list[CheckResult])
    assert_type(guard.submit(["a"]), Future[list[CheckResult]])
    assert_type(Guard.default(build=False), Guard)
    guard.check("text", stage="later")  # type: ignore[arg-type]
    guard.check(b"bytes")  # type: ignore[arg-type]


def pinned_bundles() -> None:
    bundle = guard_sdk.GuardBundle.load("bundles/demo", sha256="0" * 64)
    assert_type(bundle.manifest_sha256, str)
    Guard(bundle, trust={bundle.manifest.id: bundle.manifest_sha256})
    Guard("bundles/demo", trust="trust.json", thresholds={"injection": 0.9})
    Guard("bundles/demo", trust=[bundle.manifest_sha256])  # type: ignore[arg-type]


def execution_options() -> None:
    options = guard_sdk.ExecutionOptions(spin=True, precision="fp32", windows_per_call=8, models_side_by_side=False)
    Guard("bundles/demo", device="cpu", threads=2, execution=options)
    Guard("bundles/demo", spin=True, batch_size=8, parallel=False)  # deprecated, still typed
    Guard("bundles/demo", batch_size="8")  # type: ignore[arg-type]
    guard_sdk.ExecutionOptions(precision="fp16")  # type: ignore[arg-type]
    manifest = guard_sdk.GuardBundle.load("bundles/demo").manifest
    assert_type(manifest.training.head, str)
    assert_type(manifest.metrics.parity, guard_sdk.bundle.ParityReport | None)


async def async_checks(guard: Guard) -> None:
    assert_type(await guard.acheck("text"), CheckResult)
    assert_type(await guard.acheck("answer", stage="output", context=MESSAGES), CheckResult)


def contexts(guard: Guard) -> None:
    request: guard_sdk.Context = "How do I bake bread?"
    assert_type(guard.check("answer", stage="output", context=request), CheckResult)
    assert_type(guard.check("answer", stage="output", context=MESSAGES), CheckResult)  # openai messages
    assert_type(guard.check_batch(["a", "b"], stage="output", contexts=[request, None]), list[CheckResult])
    assert_type(guard.submit(["a"], stage="output", contexts=[MESSAGES]), Future[list[CheckResult]])
    assert_type(guard_sdk.GuardBundle.load("bundles/answers").manifest.input, guard_sdk.bundle.InputSpec)
    assert_type(guard_sdk.GuardBundle.load("bundles/answers").manifest.input.request_gate, RequestGate | None)
    assert_type(guard.check("answer", stage="output", context=request).scores[0].gate, float | None)
    guard.check("answer", stage="output", context=5)  # type: ignore[arg-type]


def sync_client(guard: Guard) -> None:
    client = guard.wrap(openai.OpenAI(api_key="-"), on_fail="refuse", input_mode="sequential")
    assert_type(client, GuardedOpenAI)
    completion = client.chat.completions.create(model="m", messages=MESSAGES)
    assert_type(completion, GuardedChatCompletion)
    assert_type(completion.guard_results, list[guard_sdk.SourcedResult])
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert_type(stream, GuardedStream)
    for chunk in stream:
        assert_type(chunk, ChatCompletionChunk)
    assert_type(client.responses.create(model="m", input="hi"), GuardedResponse)
    guard.wrap(openai.OpenAI(api_key="-"), on_fail="ignore")  # type: ignore[call-overload]
    guard.wrap(openai.OpenAI(api_key="-"), input_mode="later")  # type: ignore[call-overload]
    assert_type(guard.wrap(openai.OpenAI(api_key="-"), media="refuse"), GuardedOpenAI)
    guard.wrap(openai.OpenAI(api_key="-"), media="block")  # type: ignore[call-overload]


async def async_client(guard: Guard) -> None:
    client = guard.wrap(openai.AsyncOpenAI(api_key="-"), on_decision=lambda decision: None)
    assert_type(client, GuardedAsyncOpenAI)
    assert_type(await client.chat.completions.create(model="m", messages=MESSAGES), GuardedChatCompletion)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert_type(stream, GuardedAsyncStream)
    async for chunk in stream:
        assert_type(chunk, ChatCompletionChunk)


def decorated(guard: Guard) -> None:
    def on_decision(decision: Decision) -> None:
        assert_type(decision.blocked, bool)

    @guarded(guard, input="question", output=True, on_decision=on_decision)
    def answer(question: str, *, temperature: float = 0.0) -> str:
        return question

    @guarded(guard, output=True)
    def tokens(question: str) -> Iterator[str]:
        yield question

    @guarded(guard, output=True)
    async def atokens(question: str) -> AsyncIterator[str]:
        yield question

    assert_type(answer("hi", temperature=0.5), str)
    assert_type(tokens("hi"), Iterator[str])
    assert_type(atokens("hi"), AsyncIterator[str])
    answer(1)  # type: ignore[arg-type]
    guarded(guard, output=True, on_fail="ignore")  # type: ignore[arg-type]


def errors(violation: GuardViolation) -> guard_sdk.GuardError:
    assert_type(violation.violations, list[guard_sdk.SourcedResult])
    encoding: ValueError = guard_sdk.InputEncodingError(0, "\ud800")  # an InputError, and a ValueError
    assert isinstance(encoding, guard_sdk.InputError)
    return violation  # every error the SDK raises is a GuardError


def integrations(guard: Guard) -> None:
    guardrail: litellm.integrations.custom_guardrail.CustomGuardrail = GuardSdkGuardrail(
        guard, guardrail_name="guard-sdk", event_hook=["pre_call", "post_call"], on_fail="refuse"
    )
    GuardSdkGuardrail(guard, on_fail="ignore")  # type: ignore[arg-type]
    assert_type(input_guardrail(guard, run_in_parallel=False), agents.InputGuardrail[Any])
    assert_type(output_guardrail(guard, timeout=1.0), agents.OutputGuardrail[Any])
    missing: ImportError = guard_sdk.ExtraNotInstalledError("feature", "package", "extra")
    assert guardrail and missing


def server(guard: Guard) -> None:
    from fastapi import FastAPI

    from guard_sdk.server import ServerSettings, create_app, serve_in_thread

    app = create_app(guard, ServerSettings(upstream="http://127.0.0.1:8080/v1", on_fail="refuse"))
    assert_type(app, FastAPI)
    with serve_in_thread(app) as base_url:
        assert_type(base_url, str)
    ServerSettings(on_fail="ignore")  # type: ignore[arg-type]


def triton() -> None:
    from guard_sdk.triton import TritonBackend, write_model_repository

    backend = TritonBackend("grpc://triton:8001", model_name={"demo": "demo-model"}, timeout=5)
    Guard("bundles/demo", backend=backend)
    Guard("bundles/demo", backend="http://triton:8000")  # type: ignore[arg-type]
    assert_type(write_model_repository("bundles/demo", "repo", instances=2, gpu=True), Path)
    write_model_repository("bundles/demo", "repo", precision="fp16")  # type: ignore[arg-type]
    backend_error: guard_sdk.GuardError = guard_sdk.BackendError("the server is down")
    assert backend_error
