"""HTTP in front of the broker: the Lambda Invoke API that boto3 talks to, function URLs
that plain HTTP clients call, and who may call them (Signature Version 4 checked with
botocore's signer, keys and their statements, CORS, TLS).

May import everything below :mod:`broker.service`: functions, sources, queue, store,
config and the domain model."""
