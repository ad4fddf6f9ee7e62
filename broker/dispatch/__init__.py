"""Running invocations: the dispatcher leases from the queue, invokes, and settles;
the retry decision, settling an attempt into follow-ons (retries, destinations,
dead letters), settling a batch of mapping records, the settle pipeline.

May import functions, queue, store, destinations, config, events and the domain model."""
