"""The AWS SDKs' endpoint variables (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``) choose the
S3 endpoint when the config has no ``storage.endpoint_url``, on SeaweedFS. Before, they were
not read: the requests went to amazonaws.com."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crypto_lakehouse import storage

REPO = Path(__file__).resolve().parents[2]
DEAD = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture
def endpoint_env(monkeypatch):
    for var in (
        *storage.ENDPOINT_VARIABLES,
        *storage.REGION_VARIABLES,
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    ):
        monkeypatch.delenv(var, raising=False)
    storage.configure(None)
    yield monkeypatch
    storage.configure(None)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A fresh process that never calls storage.configure (a user's notebook or script)."""
    full = {k: v for k, v in os.environ.items() if k not in storage.ENDPOINT_VARIABLES}
    full.update(env, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "emulator")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_an_endpoint_variable_alone_reaches_the_store(seaweed, seaweed_bucket, var):
    """No config and no configure(): writes, reads, the lease's conditional requests
    (botocore) and a reader of crypto_lakehouse.loading all go to the variable's endpoint
    (an IP address: path-style addressing without being told)."""
    root = f"s3://{seaweed_bucket}/endpoint-env-{var.lower()}"
    done = _run(
        f"""
        from crypto_lakehouse import loading, storage
        storage.write_bytes("{root}/x.bin", b"abc")
        print("read", storage.read_bytes("{root}/x.bin"))
        print("conditional", tuple(storage.conditional_support("{root}/probe.json")))
        try:
            loading.load_klines("{root}/nothing-here", "um_futures", "BTCUSDT", "1m")
        except loading.DataNotFoundError as exc:
            print("reader", exc)
        """,
        {**seaweed.env, var: seaweed.endpoint_url},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "read b'abc'" in done.stdout
    assert "conditional (True, True)" in done.stdout
    # The reader listed the bucket: it exists, the prefix holds nothing.
    assert "reader no lakehouse data in" in done.stdout
    assert "no object below it" in done.stdout
    assert "amazonaws" not in done.stdout + done.stderr


def test_precedence_config_then_s3_variable_then_general_variable(seaweed, s3_root, endpoint_env):
    storage.configure(None)
    endpoint_env.setenv("AWS_ENDPOINT_URL", DEAD)
    endpoint_env.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    storage.write_bytes(f"{s3_root}/a", b"a")  # the service-specific variable wins
    assert storage.s3_endpoint()["endpoint_url"] == seaweed.endpoint_url

    endpoint_env.setenv("AWS_ENDPOINT_URL", seaweed.endpoint_url)
    endpoint_env.setenv("AWS_ENDPOINT_URL_S3", DEAD)
    with pytest.raises(OSError):
        storage.write_bytes(f"{s3_root}/b", b"b")  # ... also over a working general one

    storage.configure({"endpoint_url": seaweed.endpoint_url})  # the config key wins
    endpoint_env.setenv("AWS_ENDPOINT_URL", DEAD)
    storage.write_bytes(f"{s3_root}/c", b"c")
    assert storage.read_bytes(f"{s3_root}/c") == b"c"

    storage.configure({"endpoint_url": DEAD, "addressing_style": "path"})
    endpoint_env.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    with pytest.raises(OSError):
        storage.write_bytes(f"{s3_root}/d", b"d")


def test_ignore_variable_and_malformed_url(endpoint_env):
    endpoint_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333/")
    assert storage.s3_endpoint() == {
        "endpoint_url": "http://127.0.0.1:8333",
        "region": "us-east-1",
        "addressing_style": "path",
    }
    endpoint_env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert storage.s3_endpoint()["endpoint_url"] is None
    endpoint_env.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    endpoint_env.setenv("AWS_ENDPOINT_URL_S3", "store.example:9000")
    with pytest.raises(storage.StorageError, match="AWS_ENDPOINT_URL_S3='store.example:9000'"):
        storage.s3_endpoint()
    # A host name other than AWS's is addressed by path unless told (below).
    endpoint_env.setenv("AWS_ENDPOINT_URL_S3", "https://store.example:9000")
    assert storage.s3_endpoint()["addressing_style"] == "path"


@pytest.mark.parametrize(
    ("endpoint", "configured", "expected"),
    [
        (None, None, "virtual"),  # AWS
        ("https://s3.eu-west-1.amazonaws.com", None, "virtual"),
        ("https://s3.cn-north-1.amazonaws.com.cn/", None, "virtual"),
        ("https://minio.lan:9000", None, "path"),
        ("http://seaweed:8333", None, "path"),
        ("https://ceph.example.org", None, "path"),
        ("https://ceph.example.org", "virtual", "virtual"),  # told: kept
        ("https://s3.eu-west-1.amazonaws.com", "path", "path"),
        ("http://10.0.0.5:9000", "virtual", "path"),  # an address: always path
    ],
)
def test_addressing_is_virtual_on_aws_and_by_path_on_other_endpoints(
    endpoint_env, endpoint, configured, expected
):
    """Before, every host name got virtual-hosted addressing by default
    (``bucket.minio.lan``): a self-hosted store without a wildcard DNS entry failed on the
    bucket's host name. Both clients take it (pyarrow's and the lease's botocore one)."""
    storage.configure({"endpoint_url": endpoint, "addressing_style": configured})
    assert storage.s3_endpoint()["addressing_style"] == expected
    client = storage._conditional_client()
    assert client.meta.config.s3["addressing_style"] == expected


def test_a_host_name_endpoint_without_addressing_style_reaches_the_store(seaweed, s3_root):
    """``http://localhost:PORT``, a host name of a store that serves no virtual-hosted
    bucket names. Before, the default virtual addressing asked for host
    ``lakehouse-tests.localhost`` and SeaweedFS answered 400 InvalidBucketName."""
    storage.configure({"endpoint_url": f"http://localhost:{seaweed.port}"})
    try:
        storage.write_bytes(f"{s3_root}/by-name.bin", b"abc")
        assert storage.read_bytes(f"{s3_root}/by-name.bin") == b"abc"
        assert tuple(storage.conditional_support(f"{s3_root}/probe.json")) == (True, True)
    finally:
        storage.configure(None)


def test_the_region_reaches_both_clients_with_an_endpoint(endpoint_env):
    """A configured ``storage.region`` is what both clients sign with, also with an endpoint;
    without one, the environment's (``AWS_REGION``, else ``AWS_DEFAULT_REGION``: before, an
    endpoint meant us-east-1 whatever the environment said, and a MinIO server configured
    for another region refused every request), else us-east-1."""

    def regions():
        return (
            storage.s3_endpoint()["region"],
            storage._s3().region,
            storage._conditional_client().meta.region_name,
        )

    storage.configure({"endpoint_url": "https://minio.lan:9000", "region": "eu-central-2"})
    assert regions() == ("eu-central-2",) * 3
    endpoint_env.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert regions() == ("eu-central-2",) * 3  # the configured one wins
    storage.configure({"endpoint_url": "https://minio.lan:9000"})
    assert regions() == ("ap-south-1",) * 3
    endpoint_env.setenv("AWS_REGION", "sa-east-1")
    assert regions() == ("sa-east-1",) * 3
    endpoint_env.delenv("AWS_REGION")
    endpoint_env.delenv("AWS_DEFAULT_REGION")
    assert regions() == ("us-east-1",) * 3


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://s3-ap-southeast-2.amazonaws.com/", "ap-southeast-2"),
        ("https://s3.dualstack.us-east-2.amazonaws.com", "us-east-2"),
        ("https://s3-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("https://my-bucket.s3.eu-central-2.amazonaws.com:443", "eu-central-2"),
        ("https://s3.amazonaws.com", "sa-east-1"),  # global: the environment's
        ("https://minio.eu-west-1.example.org", "sa-east-1"),  # not AWS's: the environment's
    ],
)
def test_an_aws_regional_endpoint_signs_for_its_own_region(endpoint_env, endpoint, expected):
    """An AWS regional endpoint without ``storage.region``: both clients sign for the region
    its host names. Before, it was the environment's or us-east-1, and AWS refuses a request
    signed for another region (AuthorizationHeaderMalformed) without redirecting an explicit
    endpoint. A configured region still wins."""
    endpoint_env.setenv("AWS_REGION", "sa-east-1")
    storage.configure({"endpoint_url": endpoint})
    assert storage.s3_endpoint()["region"] == expected
    assert storage._s3().region == expected
    assert storage._conditional_client().meta.region_name == expected
    storage.configure({"endpoint_url": endpoint, "region": "eu-north-1"})
    assert storage.s3_endpoint()["region"] == "eu-north-1"


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({"endpoint_url": "http://127.0.0.1:8333"}, "http://127.0.0.1:8333/bkt/a/b%20c.pqt"),
        (
            {"endpoint_url": "https://minio.lan:9000/", "addressing_style": "virtual"},
            "https://bkt.minio.lan:9000/a/b%20c.pqt",
        ),
        ({"region": "eu-west-1"}, "https://bkt.s3.eu-west-1.amazonaws.com/a/b%20c.pqt"),
    ],
)
def test_whole_object_get_addresses_the_object_as_the_sdks_do(endpoint_env, settings, url):
    """The seam's own whole-object GET (no HEAD first) addresses an object as pyarrow's and
    botocore's clients do: by path on a self-hosted endpoint, virtual-hosted when asked or
    on AWS (the region's endpoint); keys percent-encoded."""
    storage.configure(settings)
    endpoint = storage.s3_endpoint()
    getter = storage._WholeObjects(endpoint, credentials=None, pool_size=1)
    assert getter.url(storage.data_path("s3://bkt/a/b c.pqt")) == url


def test_whole_object_get_left_to_pyarrow_without_a_region_on_aws(endpoint_env):
    """On AWS without a configured region (`storage.region`), pyarrow finds the bucket's
    region: the seam's GET is not used (reads go through pyarrow, a HEAD and a GET)."""
    storage.configure(None)
    assert storage.s3_endpoint()["region"] is None
    assert storage._whole_objects() is None
