"""Reading S3 notification documents as MinIO and Ceph send them, and Lambda's S3 event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.events.s3 import (
    S3DocumentError,
    S3Filter,
    dedup_key,
    encode_key,
    lambda_event,
    parse_notification,
    source_address,
)
from tests.s3_samples import (
    CEPH_EVENT_RECORD,
    CEPH_UNPREFIXED,
    MINIO_GUIDE,
    MINIO_WEBHOOK_DELETE,
    MINIO_WEBHOOK_PUT,
)


def test_minio_document() -> None:
    [record] = parse_notification(MINIO_GUIDE.encode())
    assert (record.event_name, record.bucket, record.key) == (
        "s3:ObjectCreated:Put",
        "images",
        "myphoto.jpg",
    )
    assert (record.size, record.etag, record.sequencer, record.version_id) == (
        248682,
        "f1671feacb8bbf7b0397c6e9364e8c92",
        "14CF20BD1EFD5B93",
        "1",
    )


def test_minio_url_encoded_key_and_delete() -> None:
    [put] = parse_notification(MINIO_WEBHOOK_PUT)
    [removed] = parse_notification(MINIO_WEBHOOK_DELETE)
    assert put.key == "Tile_%2B002_%2B002.mtl" and put.decoded_key == "Tile_+002_+002.mtl"
    assert removed.event_name == "s3:ObjectRemoved:Delete"
    assert (removed.size, removed.etag, removed.sequencer) == (None, None, "17A76FF4843A978E")


@pytest.mark.parametrize("document", [CEPH_EVENT_RECORD, CEPH_UNPREFIXED])
def test_ceph_document(document: str) -> None:
    [record] = parse_notification(document)
    assert record.event_name == "s3:ObjectCreated:Put"  # with or without the prefix
    assert record.size == 1024  # Ceph sends it as a string
    assert record.version_id is None  # "" means none
    assert (record.bucket, record.key, record.region) == ("mybucket1", "myimage1.jpg", "us-east-1")


@pytest.mark.parametrize(
    ("given", "host", "sender", "address"),
    [
        ("192.168.1.80:55328", None, "10.0.0.9", "192.168.1.80"),  # MinIO: host:port
        ("[2001:db8::1]:443", None, "10.0.0.9", "2001:db8::1"),
        ("2001:db8::1", None, "10.0.0.9", "2001:db8::1"),
        ("", "172.17.0.3", "", "172.17.0.3"),  # MinIO's source.host
        ("", None, "10.0.0.9", "10.0.0.9"),  # Ceph RGW: the webhook's client
        ("minio.local", None, "::1", "::1"),
        (None, None, "", "127.0.0.1"),
    ],
)
def test_the_source_address_is_always_an_ip_address(
    given: str | None, host: str | None, sender: str, address: str
) -> None:
    raw: dict[str, Any] = {}
    if given is not None:
        raw["requestParameters"] = {"sourceIPAddress": given}
    if host is not None:
        raw["source"] = {"host": host}
    assert source_address(raw, sender) == address


def test_lambda_event_shape() -> None:
    [record] = parse_notification(MINIO_WEBHOOK_PUT)
    event = lambda_event(record, region="eu-local-1")
    assert list(event) == ["Records"] and len(event["Records"]) == 1
    shaped = event["Records"][0]
    assert shaped["eventSource"] == "aws:s3"
    assert shaped["eventName"] == "ObjectCreated:Put"  # as Lambda delivers it
    assert shaped["awsRegion"] == "eu-local-1"  # MinIO sent ""
    assert shaped["eventTime"] == "2024-01-05T11:26:33.408Z"
    assert shaped["userIdentity"] == {"principalId": "minioadmin"}
    assert shaped["requestParameters"] == {"sourceIPAddress": "192.168.65.1"}
    assert shaped["responseElements"]["x-amz-request-id"] == "17A76FE05CEBA939"
    assert shaped["s3"] == {
        "s3SchemaVersion": "1.0",
        "configurationId": "Config",
        "bucket": {
            "name": "vd-main",
            "ownerIdentity": {"principalId": "minioadmin"},
            "arn": "arn:aws:s3:::vd-main",
        },
        "object": {
            "key": "Tile_%2B002_%2B002.mtl",
            "size": 210,
            "eTag": "775ff5def9531772a2bb12853cd46fce",
            "sequencer": "17A76FE05CF3469B",
        },
    }
    json.dumps(event)  # a JSON document


@pytest.mark.parametrize(
    ("events", "prefix", "suffix", "expected"),
    [
        (["s3:ObjectCreated:*"], "", "", [True, False]),
        (["s3:ObjectRemoved:*"], "", "", [False, True]),
        (["ObjectCreated:Put", "s3:ObjectRemoved:Delete"], "", "", [True, True]),
        (["s3:*"], "Tile_+", ".mtl", [True, True]),  # the decoded key
        (["s3:ObjectCreated:*"], "Tile_%2B", "", [False, False]),
        (["s3:ObjectCreated:Copy"], "", "", [False, False]),
        (["s3:ObjectCreated:*"], "", ".jpg", [False, False]),
    ],
)
def test_filter(events: list[str], prefix: str, suffix: str, expected: list[bool]) -> None:
    put = parse_notification(MINIO_WEBHOOK_PUT)[0]
    removed = parse_notification(MINIO_WEBHOOK_DELETE)[0]
    rule = S3Filter(tuple(events), prefix, suffix)
    assert [rule.matches(put), rule.matches(removed)] == expected


def test_dedup_key() -> None:
    [a] = parse_notification(MINIO_WEBHOOK_PUT)
    [again] = parse_notification(MINIO_WEBHOOK_PUT)
    [removed] = parse_notification(MINIO_WEBHOOK_DELETE)
    assert dedup_key("thumbs", a) == dedup_key("thumbs", again)
    assert dedup_key("thumbs", a) != dedup_key("other", a)  # per function
    assert dedup_key("thumbs", a) != dedup_key("thumbs", removed)
    assert dedup_key("thumbs", a) != dedup_key("thumbs", a, replay=1)  # a seek replays
    assert dedup_key("thumbs", a, replay=1) == dedup_key("thumbs", again, replay=1)
    assert len(dedup_key("x" * 64, a, replay=2**31)) <= 255  # fits the idempotency key column

    doc: dict[str, Any] = json.loads(MINIO_WEBHOOK_PUT)
    del doc["Records"][0]["s3"]["object"]["sequencer"]
    [no_seq] = parse_notification(doc)
    doc["Records"][0]["eventTime"] = "2024-01-05T11:26:34.000Z"
    [later] = parse_notification(doc)
    assert dedup_key("u", no_seq) != dedup_key("u", later)  # eTag + eventTime then


def test_s3_test_event_has_no_records() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    assert parse_notification(json.dumps(test_event)) == []


def _broken(path: list[str | int], value: Any) -> str:
    doc = json.loads(MINIO_WEBHOOK_PUT)
    holder = doc
    for part in path[:-1]:
        holder = holder[part]
    if value is KeyError:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
        ('{"hello": 1}', "no Records"),
        ('{"Records": {}}', "Records: expected a list, got an object"),
        ('{"Records": [7]}', "Records[0]: expected an object, got int"),
        (_broken(["Records", 0, "eventName"], KeyError), "Records[0].eventName: missing"),
        (_broken(["Records", 0, "eventName"], "Hello World"), "not an S3 event name"),
        (_broken(["Records", 0, "s3", "object", "key"], KeyError), "s3.object.key: missing"),
        (_broken(["Records", 0, "s3", "bucket"], None), "s3.bucket: expected an object, got null"),
        (_broken(["Records", 0, "s3", "object", "size"], "big"), "size: expected a number"),
        (_broken(["Records", 0, "s3", "object", "size"], -1), "size: expected 0 or more"),
    ],
)
def test_malformed_documents_say_why(document: str, reason: str) -> None:
    with pytest.raises(S3DocumentError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(document)


def test_encode_key_like_s3() -> None:
    assert encode_key("in coming/a+b ü.jpg") == "in+coming/a%2Bb+%C3%BC.jpg"
