"""Whether a process traces, as the standard ``OTEL_*`` variables say, and its
:class:`~broker.observability.tracing.Tracing`: OpenTelemetry's (imported only then,
``eventwire[tracing]``) or :data:`~broker.observability.tracing.NO_TRACING`."""

from __future__ import annotations

from collections.abc import Mapping

from broker.extras import require
from broker.observability.tracing import NO_TRACING, Tracing


def configured(env: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces: an exporter other than ``none``,
    or an OTLP endpoint, and the SDK not disabled."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def from_environment(env: Mapping[str, str]) -> Tracing:
    """OpenTelemetry's tracing when the ``OTEL_*`` variables ask for it, else
    :data:`NO_TRACING`; a :class:`~broker.errors.UsageError` names what is missing."""
    if not configured(env):
        return NO_TRACING
    require("opentelemetry.sdk", "tracing", "tracing (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*)")
    from broker.observability import otel

    return otel.from_environment(env)
