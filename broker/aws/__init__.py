"""Amazon's queue and topic services as Eventwire speaks them: naming an SQS queue or an
SNS topic (``sqs://`` URLs, ARNs, bare names) and making the asynchronous clients
(aiobotocore) whose endpoint, region and credentials come from botocore's usual chain,
overridable per mapping or destination, so that AWS, ElasticMQ, LocalStack and moto are
reached alike.

:mod:`.names` imports only the standard library; :mod:`.clients` imports aiobotocore
(the ``aws`` extra)."""
