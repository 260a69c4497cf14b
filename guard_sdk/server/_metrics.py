"""Prometheus metrics of one app, in a registry of its own: two apps in one process count apart."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .._enforce import Decision
from .._result import CheckResult, Stage

__all__ = ["Metrics"]

# Seconds: a check of a short text takes milliseconds, a batch of long ones seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.checks = Counter("guard_checks", "Texts checked, by stage", ["stage"], registry=registry)
        self.flags = Counter(
            "guard_flags", "Labels that reached their threshold, by label", ["label"], registry=registry
        )
        self.latency = Histogram(
            "guard_check_latency_seconds",
            "Wall time of one request's check (all its texts), queueing included, by stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "guard_errors", "Requests answered with an error status, by status code", ["code"], registry=registry
        )
        self.in_progress = Gauge(
            "guard_requests_in_progress", "Requests being handled (not /metrics)", registry=registry
        )
        self.proxy_requests = Counter(
            "guard_proxy_requests", "Chat completions received by the proxy, by stream", ["stream"], registry=registry
        )
        self.proxy_blocks = Counter(
            "guard_proxy_blocks", "Proxy checks that blocked (raise or refuse), by stage", ["stage"], registry=registry
        )
        self.upstream_errors = Counter(
            "guard_proxy_upstream_errors",
            "Upstream calls that failed: connection, timeout, or status (an HTTP error status forwarded)",
            ["kind"],
            registry=registry,
        )

    def checked(self, stage: Stage, results: Sequence[CheckResult], seconds: float | None = None) -> None:
        self.checks.labels(stage).inc(sum(result.status == "checked" for result in results))
        for result in results:
            for score in result.violations:
                self.flags.labels(score.label).inc()
        if seconds is not None:
            self.latency.labels(stage).observe(seconds)

    def decided(self, decision: Decision) -> None:
        """``on_decision`` of the proxy's guarded clients."""
        self.checked(decision.stage, decision.results, decision.latency_ms / 1000.0)
        if decision.blocked:
            self.proxy_blocks.labels(decision.stage).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
