"""SQS mappings, as Lambda's: long polling, delete after success, visibility heartbeats.

* :mod:`.receive` — the pollers: long-polling ``ReceiveMessage`` tasks (10 messages a
  call) feeding the mapping loop, paused while the mapping's lanes are backed up;
* :mod:`.records` — a received message as a :class:`~pollers.batching.Record` holding
  its record of Lambda's SQS event (:mod:`broker.events.sqs`);
* :mod:`.inflight` — the messages held (received, not yet deleted nor given back) and
  the invocations they are in; what an invocation's outcome deletes;
* :mod:`.visibility` — the heartbeat that keeps held messages invisible, and deletes;
* :mod:`.outcomes` — following the invocations' outcomes, and what a batch already
  enqueued before (a crash, a redelivery) comes to;
* :mod:`.redelivery` — which invocation a message received again after a crash is
  already in (so that it is not batched again);
* :mod:`.run` — the run of an SQS mapping: lanes for concurrency, a FIFO group's batches
  one at a time;
* :mod:`.reader` and :mod:`.poller` — the source as the mapping loop drives it, and the
  poller registered for the ``sqs`` kind.
"""
