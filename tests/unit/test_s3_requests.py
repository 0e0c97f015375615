"""The HTTP requests the storage seam and the S3 stages really send (issue 18: on a remote
bucket every sequential request is a round trip): counted by a relay between the client
and SeaweedFS (tests/s3_helpers.RequestCounter), not by ``storage.request_stats``, which
counts one per call whatever pyarrow does inside it."""

from __future__ import annotations

import secrets

import pytest

from crypto_lakehouse import storage
from tests.s3_helpers import RequestCounter, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")


@pytest.fixture
def counted(seaweed, seaweed_bucket, request):
    """``(root, counter)``: a fresh ``s3://`` prefix, ``storage`` pointed at it through a
    ``RequestCounter``."""
    import re

    counter = RequestCounter(seaweed.port)
    storage.configure(dict(seaweed.storage_settings, endpoint_url=counter.endpoint_url))
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    try:
        yield f"s3://{seaweed_bucket}/{name}-{secrets.token_hex(3)}", counter
    finally:
        storage.configure(None)
        counter.close()


def _of(requests, key: str, method: str | None = None) -> list:
    """The requests naming ``key`` (path-style: ``/bucket/key``), of ``method`` if given."""
    return [
        (m, t)
        for m, t in requests
        if t.split("?", 1)[0].endswith("/" + key) and (method is None or m == method)
    ]


def test_a_whole_object_read_is_one_get(counted):
    """A 1 MiB object read whole (read-ahead, as the parse reads archives and gen_kline its
    partitions): one GET, not one ranged GET per 256 KiB as pyarrow's input stream did."""
    root, counter = counted
    body = bytes(range(256)) * 4096  # 1 MiB
    paths = [storage.join(root, f"obj{i}.bin") for i in range(2)]
    for p in paths:
        storage.write_bytes(p, body)
    counter.take()
    with storage.read_ahead(paths):
        assert [storage.read_bytes(p) for p in paths] == [body, body]
    assert storage.read_bytes(paths[0]) == body  # outside read-ahead too
    seen = counter.take()
    assert len(_of(seen, "obj0.bin", "GET")) == 2, seen
    assert len(_of(seen, "obj1.bin", "GET")) == 1, seen
    assert len(seen) <= 6, seen  # and at most a HEAD (the size) per read
