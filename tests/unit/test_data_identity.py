"""The data dir's identity marker (crypto_lakehouse/data_identity.py): a data dir wiped or
replaced under an intact run dir is rebuilt; a first run and an upgrade (no marker, no
record) are not; a dry run writes nothing; a run dir inside the data dir needs no marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crypto_lakehouse import data_identity, layout, storage
from tests.s3_helpers import weed_binary

RECORDS = ("reports/aws_parse/spot/klines-1m/shards/0.json", "summaries/aws_parse/spot.json",
           "stats/aws_parse/spot/klines-1m/BTCUSDT.json", "report/index.html")  # fmt: skip
KEPT = ("listing/spot/klines-1m.json", "exchange_info/spot.json", "stamps/x/y.json")


@pytest.fixture(params=["local", "s3"])
def dirs(request, tmp_path):
    """(data dir, run dir elsewhere) of a run that built both, markers included."""
    if request.param == "s3":
        if weed_binary() is None:
            pytest.skip("needs the weed binary")
        data = request.getfixturevalue("s3_root")
    else:
        data = str(tmp_path / "data")
    run_dir = tmp_path / "run"
    for name in RECORDS + KEPT:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    assert data_identity.check(data, str(run_dir), dry_run=False) is None  # the first run
    return data, run_dir


def _present(run_dir: Path) -> set[str]:
    return {n for n in RECORDS + KEPT if (run_dir / n).exists()}


def _ids(data, run_dir):
    marker = storage.read_json(layout.data_identity_path(data), default=None)
    record = json.loads(Path(layout.run_identity_path(str(run_dir))).read_text())
    return (marker or {}).get("id"), record["id"]


def test_an_unchanged_data_dir_keeps_its_records(dirs):
    data, run_dir = dirs
    marker, record = _ids(data, run_dir)
    assert marker == record and len(marker) == 32
    assert data_identity.check(data, str(run_dir), dry_run=False) is None
    assert _present(run_dir) == set(RECORDS + KEPT)
    assert _ids(data, run_dir) == (marker, record)


def test_a_wiped_data_dir_removes_the_records_of_the_data(dirs):
    data, run_dir = dirs
    old, _ = _ids(data, run_dir)
    storage.delete(layout.data_identity_path(data))  # the data dir (its marker) wiped
    line = data_identity.check(data, str(run_dir), dry_run=False)
    assert (
        f"data dir {data} has no marker" in line and f"run dir {run_dir} recorded id {old}" in line
    )
    assert "this run rebuilds" in line and "\n" not in line
    assert _present(run_dir) == set(KEPT)
    marker, record = _ids(data, run_dir)
    assert marker == record != old
    assert data_identity.check(data, str(run_dir), dry_run=False) is None  # once


def test_a_data_dir_replaced_by_another_keeps_that_ones_marker(dirs):
    data, run_dir = dirs
    storage.write_json(layout.data_identity_path(data), {"id": "another"})
    line = data_identity.check(data, str(run_dir), dry_run=False)
    assert "holds another marker (id another)" in line
    assert _present(run_dir) == set(KEPT)
    assert _ids(data, run_dir) == ("another", "another")


def test_a_dry_run_says_what_a_run_would_do_and_writes_nothing(dirs):
    data, run_dir = dirs
    storage.delete(layout.data_identity_path(data))
    record = Path(layout.run_identity_path(str(run_dir))).read_bytes()
    line = data_identity.check(data, str(run_dir), dry_run=True)
    if storage.is_remote(data):  # a dry run sends the bucket no request
        assert line is None
    else:
        assert "has no marker" in line and "a real run removes them" in line
    assert _present(run_dir) == set(RECORDS + KEPT)
    assert storage.read_json(layout.data_identity_path(data), default=None) is None
    assert Path(layout.run_identity_path(str(run_dir))).read_bytes() == record


def test_an_upgrade_or_a_new_run_dir_adopts_the_data_dir(dirs, tmp_path):
    data, run_dir = dirs
    marker, _ = _ids(data, run_dir)
    # A new run dir on a data dir that has a marker: no record to compare with.
    other = tmp_path / "other_run"
    (other / RECORDS[0]).parent.mkdir(parents=True)
    (other / RECORDS[0]).write_text("{}")
    assert data_identity.check(data, str(other), dry_run=False) is None
    assert (other / RECORDS[0]).exists() and _ids(data, other) == (marker, marker)
    # An upgrade: a data dir and run dir made before the markers existed.
    storage.delete(layout.data_identity_path(data))
    Path(layout.run_identity_path(str(run_dir))).unlink()
    assert data_identity.check(data, str(run_dir), dry_run=True) is None
    assert storage.read_json(layout.data_identity_path(data), default=None) is None
    assert data_identity.check(data, str(run_dir), dry_run=False) is None
    assert _present(run_dir) == set(RECORDS + KEPT)
    new, record = _ids(data, run_dir)
    assert new == record


def test_a_run_dir_inside_the_data_dir_needs_no_marker(tmp_path):
    data = tmp_path / "data"
    run_dir = layout.default_run_dir(str(data))
    (Path(run_dir) / RECORDS[0]).parent.mkdir(parents=True)
    (Path(run_dir) / RECORDS[0]).write_text("{}")
    assert data_identity.check(str(data), run_dir, dry_run=False) is None
    assert sorted(p.name for p in Path(run_dir).iterdir()) == ["reports"]


def test_an_unreadable_marker_is_replaced_and_the_data_rebuilt(dirs):
    data, run_dir = dirs
    old, _ = _ids(data, run_dir)
    storage.write_bytes(layout.data_identity_path(data), b"not json")
    line = data_identity.check(data, str(run_dir), dry_run=False)
    assert "holds an unreadable marker" in line
    assert _present(run_dir) == set(KEPT)
    marker, record = _ids(data, run_dir)
    assert marker == record != old


@pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")
def test_a_start_on_an_unchanged_bucket_reads_the_marker_only(seaweed, seaweed_bucket, tmp_path):
    import secrets

    from tests.s3_helpers import RequestCounter

    counter = RequestCounter(seaweed.port)
    storage.configure(dict(seaweed.storage_settings, endpoint_url=counter.endpoint_url))
    try:
        data = f"s3://{seaweed_bucket}/identity-{secrets.token_hex(3)}"
        assert data_identity.check(data, str(tmp_path / "run"), dry_run=False) is None
        counter.requests.clear()
        assert data_identity.check(data, str(tmp_path / "run"), dry_run=False) is None
        # The marker read as every record is (storage.read_json: one GET); no write.
        marker = f"/{seaweed_bucket}/{data.split('/', 3)[3]}/lakehouse/data_dir_id.json"
        assert counter.requests == [("GET", marker)]
        counter.requests.clear()
        assert data_identity.check(data, str(tmp_path / "run"), dry_run=True) is None
        assert counter.requests == []
    finally:
        storage.configure(None)
        counter.close()
