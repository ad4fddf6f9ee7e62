"""HTTP in front of the broker: the Lambda Invoke API that boto3 talks to.

May import everything below :mod:`broker.service`: functions, sources, queue, store,
config and the domain model."""
