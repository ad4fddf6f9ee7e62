"""S3-style object notifications: webhooks (MinIO, Ceph RGW), watched directories, and the
documents a mapping reads off RabbitMQ, Kafka or Redis Streams (:mod:`pollers.s3.documents`)."""
