"""S3 event notification documents as MinIO and Ceph RGW send them, from their published docs.

Kept byte for byte as published (only wrapped), so the parser is tested on what
the servers really send, quirks included: MinIO's top-level ``EventName``/``Key``
and URL-encoded keys, Ceph's ``size`` as a string and its ``eventName`` with
or without the ``s3:`` prefix.
"""

from __future__ import annotations

# MinIO's bucket notification guide (docs/bucket/notifications/README.md in
# minio/minio), the message its NATS example prints after `mc cp myphoto.jpg
# myminio/images`; every target (webhook included) sends this document.
MINIO_GUIDE = (
    '{"EventType":"s3:ObjectCreated:Put","Key":"images/myphoto.jpg","Records":[{"eventVersion":'
    '"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2017-07-07T18:46:37Z","eventNam'
    'e":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minio"},"requestParameters":{"sou'
    'rceIPAddress":"192.168.1.80:55328"},"responseElements":{"x-amz-request-id":"14CF20BD1EFD5B'
    '93","x-minio-origin-endpoint":"http://127.0.0.1:9000"},"s3":{"s3SchemaVersion":"1.0","conf'
    'igurationId":"Config","bucket":{"name":"images","ownerIdentity":{"principalId":"minio"},"a'
    'rn":"arn:aws:s3:::images"},"object":{"key":"myphoto.jpg","size":248682,"eTag":"f1671feacb8'
    'bbf7b0397c6e9364e8c92","contentType":"image/jpeg","userDefined":{"content-type":"image/jpe'
    'g"},"versionId":"1","sequencer":"14CF20BD1EFD5B93"}},"source":{"host":"192.168.1.80","port'
    '":"55328","userAgent":"Minio (linux; amd64) minio-go/2.0.4 mc/DEVELOPMENT.GOGET"}}],"level'
    '":"info","msg":"","time":"2017-07-07T11:46:37-07:00"}'
)

# A MinIO (2024, minio-go v7.0.66) webhook POST of an upload whose key needed
# URL-encoding ("Tile_+002_+002.mtl"), and of its removal, as logged by a receiver.
MINIO_WEBHOOK_PUT = (
    '{"EventName":"s3:ObjectCreated:Put","Key":"vd-main/Tile_+002_+002.mtl","Records":[{"eventV'
    'ersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2024-01-05T11:26:33.408'
    'Z","eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minioadmin"},"request'
    'Parameters":{"principalId":"minioadmin","region":"","sourceIPAddress":"192.168.65.1"},"res'
    'ponseElements":{"x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2'
    'e3e8","x-amz-request-id":"17A76FE05CEBA939","x-minio-deployment-id":"c56dc51b-4b0a-41c0-ab'
    '16-7b990c2d51ad","x-minio-origin-endpoint":"http://172.19.0.2:9000"},"s3":{"s3SchemaVersio'
    'n":"1.0","configurationId":"Config","bucket":{"name":"vd-main","ownerIdentity":{"principal'
    'Id":"minioadmin"},"arn":"arn:aws:s3:::vd-main"},"object":{"key":"Tile_%2B002_%2B002.mtl","'
    'size":210,"eTag":"775ff5def9531772a2bb12853cd46fce","contentType":"application/octet-strea'
    'm","userMetadata":{"content-type":"application/octet-stream"},"sequencer":"17A76FE05CF3469'
    'B"}},"source":{"host":"192.168.65.1","port":"","userAgent":"MinIO (linux; arm64) minio-go/'
    'v7.0.66 MinIO Console/(dev)"}}]}'
)
MINIO_WEBHOOK_DELETE = (
    '{"EventName":"s3:ObjectRemoved:Delete","Key":"vd-main/Tile_+002_+002.mtl","Records":[{"eve'
    'ntVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2024-01-05T11:27:59.'
    '964Z","eventName":"s3:ObjectRemoved:Delete","userIdentity":{"principalId":"minioadmin"},"r'
    'equestParameters":{"principalId":"minioadmin","region":"","sourceIPAddress":"127.0.0.1"},"'
    'responseElements":{"content-length":"164","x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374'
    'd3b3fd1af9251148b658df7ac2e3e8","x-amz-request-id":"17A76FF48418FD2E","x-minio-deployment-'
    'id":"c56dc51b-4b0a-41c0-ab16-7b990c2d51ad","x-minio-origin-endpoint":"http://172.19.0.2:90'
    '00"},"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"vd-main","'
    'ownerIdentity":{"principalId":"minioadmin"},"arn":"arn:aws:s3:::vd-main"},"object":{"key":'
    '"Tile_%2B002_%2B002.mtl","sequencer":"17A76FF4843A978E"}},"source":{"host":"127.0.0.1","po'
    'rt":"","userAgent":"MinIO (linux; arm64) minio-go/v7.0.66 MinIO Console/(dev)"}}]}'
)

# Ceph Object Gateway "Event record" example (Red Hat Ceph Storage 4 developer
# guide, as in Ceph's doc/radosgw/notifications.rst of that time).
CEPH_EVENT_RECORD = """{"Records":[
    {
        "eventVersion":"2.1",
        "eventSource":"ceph:s3",
        "awsRegion":"us-east-1",
        "eventTime":"2019-11-22T13:47:35.124724Z",
        "eventName":"s3:ObjectCreated:Put",
        "userIdentity":{
            "principalId":"tester"
        },
        "requestParameters":{
            "sourceIPAddress":""
        },
        "responseElements":{
            "x-amz-request-id":"503a4c37-85eb-47cd-8681-2817e80b4281.5330.903595",
            "x-amz-id-2":"14d2-zone1-zonegroup1"
        },
        "s3":{
            "s3SchemaVersion":"1.0",
            "configurationId":"mynotif1",
            "bucket":{
                "name":"mybucket1",
                "ownerIdentity":{
                    "principalId":"tester"
                },
                "arn":"arn:aws:s3:us-east-1::mybucket1",
                "id":"503a4c37-85eb-47cd-8681-2817e80b4281.5332.38"
            },
            "object":{
                "key":"myimage1.jpg",
                "size":"1024",
                "eTag":"37b51d194a7513e45b56f6524f2d51f2",
                "versionId":"",
                "sequencer": "F7E6D75DC742D108",
                "metadata":[],
                "tags":[]
            }
        },
        "eventId":"",
        "opaqueData":"me@example.com"
    }
]}"""

# Newer Ceph releases (IBM Storage Ceph docs, "Event record") send the event
# name without the "s3:" prefix; otherwise the same record.
CEPH_UNPREFIXED = CEPH_EVENT_RECORD.replace('"s3:ObjectCreated:Put"', '"ObjectCreated:Put"')
