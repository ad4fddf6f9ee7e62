"""The ``metrics`` and ``tracing`` sections of ``eventwire.yaml``.

::

    metrics:
      listen: 0.0.0.0:9464            # GET /metrics for a process without the API
    tracing:
      exporter: otlp                  # otlp (the default), console or none
      endpoint: http://collector:4318 # OTLP over HTTP
      service_name: eventwire
      sample_ratio: 0.1               # of the traces that start here; a parent's choice holds
      headers_env: OTEL_AUTH_HEADERS  # the variable holding the exporter's headers (k=v,...)

Both are what a flag or the environment sets too: ``--metrics-listen`` /
``EVENTWIRE_METRICS_LISTEN``, and OpenTelemetry's own ``OTEL_*`` variables, which win
over the file so that one deployment can differ from the config it shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.config.settings import Listen
from broker.config.variables import VariableName


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsConfig(_Section):
    listen: Listen | None = None
    """Where ``serve`` answers ``GET /metrics`` besides the API listener."""


class TracingConfig(_Section):
    exporter: Literal["otlp", "console", "none"] = "otlp"
    endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    """The OTLP/HTTP collector (``/v1/traces`` is added); the SDK's default without it."""
    service_name: str | None = Field(None, min_length=1)
    sample_ratio: float | None = Field(None, ge=0.0, le=1.0)
    """Of the traces started here; one whose event brought a ``traceparent`` keeps the
    parent's choice (``parentbased_traceidratio``)."""
    headers_env: VariableName | None = None
    """The environment variable with the exporter's headers (``key=value,...``): tokens
    stay out of the file."""

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """The ``OTEL_*`` variables this section stands for (``env``: where ``headers_env``
        is read)."""
        wanted: dict[str, str] = {"OTEL_TRACES_EXPORTER": self.exporter}
        if self.endpoint:
            wanted["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.endpoint
        if self.service_name:
            wanted["OTEL_SERVICE_NAME"] = self.service_name
        if self.sample_ratio is not None:
            wanted["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            wanted["OTEL_TRACES_SAMPLER_ARG"] = f"{self.sample_ratio:g}"
        if self.headers_env and env.get(self.headers_env):
            wanted["OTEL_EXPORTER_OTLP_HEADERS"] = env[self.headers_env]
        return wanted
