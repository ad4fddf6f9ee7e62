"""Copying the Redis queue's history into the SQL store: the writer, and the child
process of ``serve`` that runs it.

Depends on the Redis queue and the store; the queue knows nothing of it."""
