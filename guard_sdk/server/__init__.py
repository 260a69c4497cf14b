"""``guard serve`` as a library: an HTTP service around a ``Guard`` (the ``server`` extra).

    from guard_sdk import Guard
    from guard_sdk.server import ServerSettings, create_app, serve_in_thread

    app = create_app(Guard("bundles/injection"), ServerSettings(upstream="http://127.0.0.1:8080/v1"))
    with serve_in_thread(app) as base_url:       # uvicorn on 127.0.0.1, a free port
        ...                                      # openai.OpenAI(base_url=base_url + "/v1", api_key="-")

Routes: ``POST /v1/moderations`` (OpenAI's Moderation API), ``POST /v1/check`` (``CheckResult`` JSON),
``POST /v1/chat/completions`` (a guarded proxy to ``settings.upstream``), ``GET /healthz``, ``/readyz``, ``/metrics``.
"""

from .._errors import ExtraNotInstalledError

try:
    import fastapi  # noqa: F401
    import openai  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:
    raise ExtraNotInstalledError("guard_sdk.server", exc.name or "a server package", "server") from exc

from ._app import create_app
from ._run import serve_in_thread
from ._settings import OPENAI_CATEGORIES, ServerSettings

__all__ = ["OPENAI_CATEGORIES", "ServerSettings", "create_app", "serve_in_thread"]
