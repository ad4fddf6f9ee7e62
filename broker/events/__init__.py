"""The Lambda event model: the batch events handlers receive from Kafka, RabbitMQ
and Redis Streams, their batch responses (``batchItemFailures``), S3 notification
records, the function URL event and the HTTP response its result maps to, and the event
patterns and filters that select records.

Pure data and parsing: imports only the domain model."""
