"""HTTP in front of the broker: the Lambda Invoke API that boto3 talks to, and who may
call it (Signature Version 4 checked with botocore's signer, keys and their statements,
TLS).

May import everything below :mod:`broker.service`: functions, sources, queue, store,
config and the domain model."""
