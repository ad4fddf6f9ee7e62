"""The configuration: the models of ``eventwire.yaml`` (functions, schedules,
mappings, object notifications, destinations, limits), reading YAML with line
numbers, errors that name file, line and key, durations and sizes, and the
``EVENTWIRE_*`` settings of a process with its roles.

The models check their own shape only. A check that needs another concept
(destination URIs, invoker keys, schedule expressions) lives with that concept
and :mod:`broker.loading` runs it. Imports only the domain model and
:mod:`broker.events`."""
