"""``ServerSettings``: what a guard server accepts from callers and where its proxy forwards."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["OPENAI_CATEGORIES", "ServerSettings"]

# The categories of OpenAI's Moderation API, in its order; every one is a required field of its response types.
OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class ServerSettings(BaseModel):
    """Limits, authentication and the proxy's upstream of a guard server; the ``Guard`` it checks with is
    ``create_app``'s own argument, however it runs its models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr | None = None
    """Callers must send ``Authorization: Bearer <token>`` on every route but ``/healthz`` and ``/readyz``
    (``/metrics`` included); None: no authentication. Never forwarded to the upstream."""
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    """A larger request body is refused with 413 before it is read whole or parsed."""
    max_texts: int = Field(default=64, ge=1)
    """Texts per ``/v1/check`` or ``/v1/moderations`` request; more get 413."""
    max_chars: int = Field(default=32_768, ge=1)
    """Characters per text and per context (about the Guard's default ``max_tokens`` of English); more get 413."""
    timeout: float | None = Field(default=5.0, gt=0)
    """Seconds a check may take, queueing included: a late ``/v1/check`` or moderation gets 503, and a late check in
    the proxy blocks (as ``guard.wrap``'s ``timeout``). None waits forever."""
    on_fail: Literal["raise", "refuse", "monitor"] = "raise"
    """The proxy's action on a violation, as ``guard.wrap``'s: ``raise`` answers 400 with ``code`` ``content_filter``
    (a ``BadRequestError`` to openai clients); ``refuse`` a completion whose text is a refusal; ``monitor`` allows."""
    upstream: str | None = None
    """Base URL of the OpenAI-compatible server the proxy forwards ``/v1/chat/completions`` to (e.g.
    ``http://127.0.0.1:8080/v1``); None: no proxy (that route answers 404)."""
    upstream_api_key: SecretStr | None = None
    """The key sent to the upstream. When None, the caller's own bearer token is forwarded, but only when the server
    has no ``token`` (then that header is the caller's upstream key, not a credential of ours)."""
    upstream_timeout: float = Field(default=60.0, gt=0)
    """Seconds to connect to the upstream and between its bytes: past it the proxy answers 502, never hangs."""
    categories: dict[str, str] = {}
    """Bundle label -> OpenAI moderation category it reports as (labels named like a category need no entry)."""

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http:// or https:// URL, got {url!r}")
        return url.rstrip("/") if url else url

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, categories: dict[str, str]) -> dict[str, str]:
        if unknown := sorted(set(categories.values()) - set(OPENAI_CATEGORIES)):
            raise ValueError(f"categories maps labels to {unknown}, not OpenAI categories {list(OPENAI_CATEGORIES)}")
        return categories
