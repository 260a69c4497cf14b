"""Integrations with LLM client libraries, imported on use so that ``import guard_sdk`` stays cheap.

- ``guard_sdk.integrations.openai``: ``guard.wrap(openai.OpenAI() | openai.AsyncOpenAI())``.
"""
