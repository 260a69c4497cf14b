"""Integrations with LLM client libraries, imported on use so that ``import guard_sdk`` stays cheap.

- ``guard_sdk.integrations.openai``: ``guard.wrap(openai.OpenAI() | openai.AsyncOpenAI())``.
- ``guard_sdk.integrations.litellm``: ``GuardSdkGuardrail``, a LiteLLM (proxy or SDK) custom guardrail.
- ``guard_sdk.integrations.agents``: ``input_guardrail(guard)`` / ``output_guardrail(guard)`` for the OpenAI Agents SDK.
"""
