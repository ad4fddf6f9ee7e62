"""S3-style object notifications: webhooks (MinIO, Ceph RGW) and watched directories."""
