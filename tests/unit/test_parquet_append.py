"""parquet_append: keeping a file's first row groups and writing the rest gives the bytes
pyarrow writes for the whole table (the reference is ``pyarrow.parquet.write_table``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import io
from crypto_lakehouse.generate import parquet_append


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch):
    monkeypatch.setattr(parquet_append, "ROW_GROUP_ROWS", 1000)


def table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rate = rng.normal(size=n)
    return pa.table(
        {
            "t": pa.array(np.arange(n, dtype=np.int64) * 60_000).view(pa.timestamp("ms", tz="UTC")),
            "x": rng.normal(size=n),
            "i": rng.integers(0, 5, n),
            "nullable": pa.array(rate, mask=rng.random(n) < 0.7),
        }
    )


def write_whole(path, tbl, metadata):
    io.write_parquet(path, tbl, metadata=metadata, use_dictionary=False, row_group_size=1000)


@pytest.mark.parametrize("keep_groups", [0, 1, 2, 3])
def test_kept_row_groups_plus_rest_equal_whole_file(tmp_path, keep_groups):
    whole = table(5200)
    write_whole(tmp_path / "old.pqt", whole.slice(0, 3500), {"k": "old"})
    write_whole(tmp_path / "want.pqt", whole, {"k": "new", "n": "5200"})
    parquet_append.append_rows(
        tmp_path / "got.pqt",
        tmp_path / "old.pqt",
        keep_groups,
        whole.slice(keep_groups * 1000),
        metadata={"k": "new", "n": "5200"},
        use_dictionary=False,
    )
    assert (tmp_path / "got.pqt").read_bytes() == (tmp_path / "want.pqt").read_bytes()
    assert pq.read_table(tmp_path / "got.pqt").equals(pq.read_table(tmp_path / "want.pqt"))


def test_in_place_and_footer_round_trip(tmp_path):
    whole = table(4100, seed=1)
    path = tmp_path / "f.pqt"
    write_whole(path, whole.slice(0, 2500), None)
    parquet_append.append_rows(path, path, 2, whole.slice(2000), use_dictionary=False)
    write_whole(tmp_path / "want.pqt", whole, None)
    raw = path.read_bytes()
    assert raw == (tmp_path / "want.pqt").read_bytes()
    footer, start = parquet_append.read_footer(path)
    assert parquet_append.encode_footer(footer) == raw[start:-8]
    assert parquet_append.row_group_rows(footer) == [1000, 1000, 1000, 1000, 100]


def _without_raw(struct):
    """A deep copy of a decoded struct whose every part is encoded field by field."""
    out = parquet_append.Struct()
    for f in struct:
        value = f.value
        if isinstance(value, list):
            value = _without_raw(value)
        elif isinstance(value, tuple):
            elem, items = value
            value = (elem, [_without_raw(x) if isinstance(x, list) else x for x in items])
        out.append(parquet_append.Field(f.id, f.type, value))
    return out


def test_footer_codec_field_by_field_and_from_scanned_row_groups(tmp_path):
    """Row groups keep their bytes when decoded, so the encoder is also checked without
    them; the scanned footer (what append_rows reads) decodes only the row counts, and its
    row groups decode to the same fields as a full decode."""
    path = tmp_path / "f.pqt"
    tbl = table(4100, seed=3)
    io.write_parquet(path, tbl, metadata={"k": "v"}, row_group_size=1000)  # with statistics
    raw = path.read_bytes()
    footer, start = parquet_append.read_footer(path)
    assert parquet_append.encode_footer(_without_raw(footer)) == raw[start:-8]
    scanned, start_again = parquet_append.read_footer(path, scan_row_groups=True)
    assert start_again == start
    assert parquet_append.encode_footer(scanned) == raw[start:-8]
    assert parquet_append.row_group_rows(scanned) == [1000, 1000, 1000, 1000, 100]
    groups = parquet_append._get(scanned, parquet_append.FMD_ROW_GROUPS).value[1]
    full_groups = parquet_append._get(footer, parquet_append.FMD_ROW_GROUPS).value[1]
    assert all(len(g) == 1 for g in groups)  # the row count only
    assert [parquet_append._decoded(g) for g in groups] == full_groups
    with pytest.raises(parquet_append.UnsupportedFile, match="truncated"):
        parquet_append.decode_footer(raw[start:-20], scan_row_groups=True)


def test_nothing_kept_needs_no_previous_file(tmp_path):
    """keep_groups 0: the tail is the whole table, written as such (the previous file is
    not read: missing, or not Parquet at all)."""
    whole = table(2300, seed=2)
    write_whole(tmp_path / "want.pqt", whole, {"k": "v"})
    (tmp_path / "garbage.pqt").write_bytes(b"not parquet")
    for previous in ("missing.pqt", "garbage.pqt"):
        parquet_append.append_rows(
            tmp_path / "got.pqt", tmp_path / previous, 0, whole, {"k": "v"}, use_dictionary=False
        )
        assert (tmp_path / "got.pqt").read_bytes() == (tmp_path / "want.pqt").read_bytes()


def test_refuses_more_groups_than_the_file_has(tmp_path):
    write_whole(tmp_path / "old.pqt", table(1500), None)
    with pytest.raises(parquet_append.UnsupportedFile):
        parquet_append.append_rows(tmp_path / "x.pqt", tmp_path / "old.pqt", 2, table(10))
    assert not (tmp_path / "x.pqt").exists()


def test_refuses_row_groups_of_another_size(tmp_path):
    io.write_parquet(tmp_path / "old.pqt", table(1500), row_group_size=700)
    with pytest.raises(parquet_append.UnsupportedFile):
        parquet_append.append_rows(tmp_path / "x.pqt", tmp_path / "old.pqt", 1, table(10))
