"""What one ``serve`` process does: its roles (``--roles`` / ``EVENTWIRE_ROLES``).

Every process runs all of them unless told otherwise. Split, they let a
deployment put the work on more cores or machines: pollers that read sources
and enqueue in some processes, dispatchers that run the functions in others,
all sharing one PostgreSQL or Redis queue.

* ``pollers``   event source mappings (Kafka, RabbitMQ, Redis Streams) and
                object directory watchers
* ``scheduler`` cron and rate schedules
* ``api``       the HTTP endpoints (object notification webhooks, the Lambda API)
* ``dispatch``  the dispatcher and the functions' invokers; with the Redis
                queue, also the writer that copies its history into SQL
"""

from __future__ import annotations

ROLES = ("api", "dispatch", "pollers", "scheduler")
ALL_ROLES = ",".join(ROLES)

ROLE_OF_POLLER = {
    "schedule": "scheduler",
    "s3_webhook": "api",
    "s3_dir": "pollers",
    "kafka": "pollers",
    "amqp": "pollers",
    "redis": "pollers",
    "sqs": "pollers",
    "lambda_api": "api",
}
"""The role each poller kind (:data:`broker.sources.pollers.POLLERS`) belongs to."""


def parse_roles(value: str) -> str:
    """``value`` (comma-separated roles) in canonical form: sorted, each once.

    Raises ValueError naming an unknown role and the known ones."""
    given = {part.strip() for part in value.split(",") if part.strip()}
    if not given:
        raise ValueError(f"no role given; expected a comma-separated list of {', '.join(ROLES)}")
    unknown = sorted(given - set(ROLES))
    if unknown:
        raise ValueError(
            f"unknown role {unknown[0]!r}; expected a comma-separated list of {', '.join(ROLES)}"
        )
    return ",".join(sorted(given))
