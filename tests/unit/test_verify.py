"""``crypto-lakehouse verify``: every Parquet footer of the data layers read; damaged files
listed and, with --remove, deleted; a failing storage is not taken for damage."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import storage
from crypto_lakehouse.cli import main
from crypto_lakehouse.verify import verify
from tests.s3_helpers import weed_binary


def _parquet(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    return path


def _data_dir(tmp_path):
    data = tmp_path / "data"
    good = [
        _parquet(data / "parsed_data/spot/klines/AUSDT/1m/202401.pqt"),
        _parquet(data / "api_data/spot/klines/AUSDT/1m/20240102.pqt"),
        _parquet(data / "results_data/spot/klines/1m/AUSDT.pqt"),
        _parquet(data / "lakehouse/quality/spot/1m/AUSDT.pqt"),
    ]
    cut = _parquet(data / "results_data/spot/resampled_klines/1h/0m/AUSDT.pqt")
    cut.write_bytes(cut.read_bytes()[:40])  # a copy stopped half-way
    # a per-symbol record: damaged, its symbol was left out of the report's tables
    record = _parquet(data / "lakehouse/provenance/spot/1m/AUSDT.pqt")
    record.write_bytes(bytes(record.stat().st_size))
    text = data / "parsed_data/spot/aggTrades/AUSDT/20240102.pqt"
    text.parent.mkdir(parents=True, exist_ok=True)
    text.write_text("not parquet at all")
    # outside the three layers, or not Parquet by name: not read
    (data / "lakehouse/notes.pqt").write_text("x")
    (data / "aws_data").mkdir()
    (data / "aws_data/x.zip").write_text("x")
    return data, good, {cut, text, record}


def test_the_damaged_files_of_the_three_layers_are_listed_then_removed(tmp_path):
    data, good, damaged = _data_dir(tmp_path)
    verdict = verify(data)
    assert verdict.checked == {"parsed_data": 2, "api_data": 1, "results_data": 2,
                               "lakehouse/provenance": 1, "lakehouse/quality": 1}  # fmt: skip
    rel = {p.relative_to(data).as_posix() for p in damaged}
    assert set(verdict.damaged) == rel and verdict.exit_code == 1
    assert all("Parquet magic bytes not found" in e for e in verdict.damaged.values())
    assert all(p.exists() for p in damaged) and verdict.removed == []
    removed = verify(data, remove=True, jobs=1)
    assert set(removed.removed) == rel
    assert not any(p.exists() for p in damaged) and all(p.exists() for p in good)
    again = verify(data)
    assert again.damaged == {} and again.exit_code == 0


def test_a_file_without_read_permission_is_not_checked_not_removed(tmp_path, monkeypatch):
    # chmod 000 (another account's file) read as "damaged", and --remove deleted it.
    import errno

    data, good, _ = _data_dir(tmp_path)
    real = storage.parquet_metadata
    locked = good[0]

    def no_permission(path):
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(storage, "parquet_metadata", no_permission)
    verdict = verify(data, remove=True)
    rel = locked.relative_to(data).as_posix()
    assert rel not in verdict.damaged and "Permission denied" in verdict.unchecked[rel]
    assert locked.exists() and verdict.exit_code == 1


def test_a_failing_storage_is_reported_as_not_checked_and_nothing_removed(tmp_path, monkeypatch):
    data, good, _ = _data_dir(tmp_path)
    real = storage.parquet_metadata

    def flaky(path):
        if "api_data" in str(path):
            raise storage.StorageError(f"{path}: 503 Slow Down")
        return real(path)

    monkeypatch.setattr(storage, "parquet_metadata", flaky)
    verdict = verify(data, remove=True)
    assert list(verdict.unchecked) == ["api_data/spot/klines/AUSDT/1m/20240102.pqt"]
    assert "503 Slow Down" in verdict.unchecked["api_data/spot/klines/AUSDT/1m/20240102.pqt"]
    assert all(p.exists() for p in good) and verdict.exit_code == 1
    assert len(verdict.removed) == 3


def test_the_command_line(tmp_path, capsys):
    data, _, damaged = _data_dir(tmp_path)
    assert main(["verify", str(data)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"verify {data}: 7 file(s) read in ")
    assert (
        "(parsed_data 2, api_data 1, results_data 2, lakehouse/provenance 1, "
        "lakehouse/quality 1); 3 damaged" in out
    )
    assert "  results_data/spot/resampled_klines/1h/0m/AUSDT.pqt: ArrowInvalid: " in out
    assert "--remove, then snakemake --cores all --forcerun aws_download_shard" in out
    assert main(["verify", str(data), "--remove", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["removed"]) == sorted(p.relative_to(data).as_posix() for p in damaged)
    assert main(["verify", str(data)]) == 0
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err
    # A layer's own folder (or a typo) is no data dir: not "0 files read, 0 damaged".
    assert main(["verify", str(data / "parsed_data")]) == 2
    assert "parsed_data: not a data dir (none of parsed_data, api_data" in capsys.readouterr().err


def _parse_state(root, state, dataset="klines-1m", name="AUSDT.json"):
    from crypto_lakehouse.parse import state_file

    storage.write_json(state_file(root, "spot", dataset, name.removesuffix(".json")), state)


def test_a_damaged_partition_the_pipeline_did_not_write_is_listed_not_removed(tmp_path, capsys):
    # A legacy BHDS parsed_data used in place: the parse never overwrites such a file (its
    # rows may be nobody's to rebuild), so --remove does not delete it either.
    data = tmp_path / "data"
    legacy = _parquet(data / "parsed_data/spot/klines/AUSDT/1m/202001.pqt")
    ours = _parquet(data / "parsed_data/spot/klines/AUSDT/1m/202401.pqt")
    funding = _parquet(data / "parsed_data/um_futures/funding/AUSDT.pqt")
    for path in (legacy, ours, funding):
        path.write_bytes(path.read_bytes()[:30])
    _parse_state(data, {"partitions": {"202401": {}}})
    assert main(["verify", str(data), "--remove"]) == 1
    out = capsys.readouterr().out
    assert not ours.exists() and legacy.exists() and funding.exists()
    assert "not removed (move them away yourself; the parse then rebuilds them):" in out
    assert "  parsed_data/spot/klines/AUSDT/1m/202001.pqt: not written by this pipeline" in out
    assert "  parsed_data/um_futures/funding/AUSDT.pqt: not written by this pipeline" in out


def test_on_s3_the_damaged_objects_are_listed_and_removed(s3_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run lock goes to lakehouse_runs/ below the current dir
    root = storage.data_path(s3_root)
    good = root / "results_data/spot/klines/1m/AUSDT.pqt"
    storage.write_parquet(good, pa.table({"x": [1, 2]}))
    cut = root / "parsed_data/spot/klines/AUSDT/1m/202401.pqt"
    storage.write_bytes(cut, storage.read_bytes(good)[:30])
    _parse_state(root, {"partitions": {"202401": {}}})  # the parse wrote it
    verdict = verify(s3_root, remove=True, jobs=4)
    assert verdict.checked == {"parsed_data": 1, "api_data": 0, "results_data": 1,
                               "lakehouse/provenance": 0, "lakehouse/quality": 0}  # fmt: skip
    assert list(verdict.damaged) == ["parsed_data/spot/klines/AUSDT/1m/202401.pqt"]
    assert verdict.removed == list(verdict.damaged) and verdict.unchecked == {}
    assert not storage.exists(cut) and storage.exists(good)


def _zip(folder, name, body: bytes, *, checksum: str | None = None, verified=True):
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(body)
    digest = checksum if checksum is not None else hashlib.sha256(body).hexdigest()
    (folder / f"{name}.CHECKSUM").write_text(f"{digest}  {name}\n")
    if verified:
        (folder / f"{name}.verified").touch()
    return folder / name


def test_zips_are_hashed_against_their_checksum_on_request(tmp_path):
    data = tmp_path / "data"
    folder = data / "aws_data/data/spot/daily/klines/AUSDT/1m"
    good = _zip(folder, "AUSDT-1m-2024-01-01.zip", b"good bytes")
    rotten = _zip(folder, "AUSDT-1m-2024-01-02.zip", b"rotten", checksum="ab" * 32)
    bad_sidecar = _zip(folder, "AUSDT-1m-2024-01-03.zip", b"x", checksum="not-hex")
    _zip(folder, "AUSDT-1m-2024-01-04.zip", b"y", checksum="cd" * 32, verified=False)
    assert "aws_data" not in verify(data).checked  # opt-in: it reads every byte
    verdict = verify(data, zips=True)
    assert verdict.checked["aws_data"] == 3  # the unverified one is the download's business
    rel = lambda p: p.relative_to(data).as_posix()  # noqa: E731
    assert set(verdict.damaged) == {rel(rotten), rel(bad_sidecar)}
    assert verdict.damaged[rel(rotten)].endswith(f"is not its CHECKSUM's {'ab' * 32}")
    assert "its CHECKSUM cannot be read" in verdict.damaged[rel(bad_sidecar)]
    removed = verify(data, zips=True, remove=True)
    # the marker goes, the zip stays: unverified, the forced download checks it again
    assert sorted(removed.removed) == sorted(rel(p) + ".verified" for p in (rotten, bad_sidecar))
    assert rotten.exists() and not rotten.with_name(rotten.name + ".verified").exists()
    assert good.with_name(good.name + ".verified").exists()
    assert verify(data, zips=True).exit_code == 0


def test_remove_waits_for_no_run_it_refuses_while_a_run_holds_the_data_dir(tmp_path, capsys):
    # A job may rewrite a damaged file meanwhile: --remove holds the data dir as a run does.
    from tests.conftest import data_dir_held

    data, _, damaged = _data_dir(tmp_path)
    with data_dir_held(data):
        assert main(["verify", str(data), "--remove"]) == 2
        assert "is in use by another run" in capsys.readouterr().err
        assert all(p.exists() for p in damaged)
        assert main(["verify", str(data)]) == 1  # a check alone needs no lock
    assert main(["verify", str(data), "--remove"]) == 1
    assert not any(p.exists() for p in damaged)


def test_a_store_that_cannot_be_reached_is_exit_2_with_one_line_not_a_traceback(
    monkeypatch, capsys
):
    """A wrong endpoint (or credentials the store refuses) checked nothing: exit 2 and one
    line naming the data dir and the request. Before, a StorageError traceback left
    `verify` with exit 1, the code of "damaged files found"."""
    from tests.s3_helpers import free_ports

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-never-printed")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    closed = free_ports(1)[0]  # nothing listens there
    try:
        code = main(["verify", "s3://team/lake", "--endpoint-url",
                     f"http://127.0.0.1:{closed}", "--addressing-style", "path"])  # fmt: skip
    finally:
        storage.configure(None)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "crypto-lakehouse verify: s3://team/lake: nothing checked: s3://team/lake/"
    )
    assert f"127.0.0.1:{closed}" in err and "Traceback" not in err
    assert "secret-never-printed" not in err


def test_an_object_a_run_replaces_during_its_footer_read_is_not_called_damaged(
    s3_root, monkeypatch
):
    """verify without --remove holds no lock: on S3 a run may replace an object between two
    requests of one footer read, which then reads bytes of the new version where the old
    one's footer was expected. Before, that good file was listed as damaged (exit 1; with
    the advice to remove it). The footer read is a GET of the object's last 64 KiB, then,
    for a longer footer, one of the footer's length (it was a HEAD for the size, then a
    ranged GET): the object here has a footer over 64 KiB and is replaced between the two
    by one with a longer footer."""
    root = storage.data_path(s3_root)
    path = root / "results_data/spot/klines/1m/AUSDT.pqt"
    storage.write_parquet(path, pa.table({f"x{i}": [i] for i in range(400)}))
    new = pa.BufferOutputStream()
    pq.write_table(pa.table({f"longer_name_{i}": [i] * 5 for i in range(800)}), new)
    real_signed = storage._whole_objects
    first_reads = []

    class ReplacedAfterTheFirstGet:
        def __init__(self, signed):
            self.signed = signed

        def get(self, p, admit=None, last=None):
            answer = self.signed.get(p, admit, last)
            if str(p) == str(path) and last == storage.FOOTER_GUESS_BYTES:
                if not first_reads:
                    fs, inner = storage.filesystem(p)
                    with fs.open_output_stream(inner) as out:  # the run's new version lands
                        out.write(new.getvalue())
                first_reads.append(str(p))
            return answer

        def __getattr__(self, name):
            return getattr(self.signed, name)

    monkeypatch.setattr(storage, "_whole_objects", lambda: ReplacedAfterTheFirstGet(real_signed()))
    verdict = verify(s3_root, jobs=1)
    assert verdict.damaged == {} and verdict.exit_code == 0
    assert len(first_reads) == 2  # read again
    assert verdict.checked["results_data"] == 1


def _page_damaged(path):
    """A real candle-like file whose first column chunk has garbage in the middle of its
    data: its footer still reads."""
    import numpy as np

    from crypto_lakehouse import io

    rng = np.random.default_rng(7)
    n = 50_000
    table = pa.table({"t": np.arange(n, dtype=np.int64) * 60_000,
                      "close": rng.normal(100, 5, n)})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_parquet(path, table)
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    first = chunk.dictionary_page_offset or chunk.data_page_offset
    start = first + chunk.total_compressed_size // 2
    body = bytearray(path.read_bytes())
    body[start : start + 256] = bytes(range(256))
    path.write_bytes(bytes(body))
    assert pq.ParquetFile(path).metadata.num_rows == n  # the footer is intact
    return path


def test_pages_finds_a_page_damaged_inside_a_file_the_footer_check_passes(tmp_path, capsys):
    data, good, damaged = _data_dir(tmp_path)
    inside = _page_damaged(data / "results_data/spot/klines/1m/BUSDT.pqt")
    rel = inside.relative_to(data).as_posix()
    assert rel not in verify(data).damaged  # the footer alone does not show it
    verdict = verify(data, pages=True)
    assert set(verdict.damaged) == {p.relative_to(data).as_posix() for p in damaged | {inside}}
    assert str(inside) in verdict.damaged[rel]  # the error names the file
    assert main(["verify", str(data), "--pages", "--remove"]) == 1
    out = capsys.readouterr().out
    assert f"  {rel}: " in out and not inside.exists() and all(p.exists() for p in good)
    assert main(["verify", str(data), "--pages"]) == 0


def test_pages_on_s3_a_failing_read_is_not_damage(s3_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = storage.data_path(s3_root)
    local = _page_damaged(tmp_path / "BUSDT.pqt")
    inside = root / "results_data/spot/klines/1m/BUSDT.pqt"
    storage.write_bytes(inside, local.read_bytes())
    good = root / "results_data/spot/klines/1m/AUSDT.pqt"
    storage.write_parquet(good, pa.table({"x": [1, 2]}))
    assert verify(s3_root).damaged == {}
    verdict = verify(s3_root, pages=True, remove=True)
    assert list(verdict.damaged) == ["results_data/spot/klines/1m/BUSDT.pqt"]
    assert not storage.exists(inside) and storage.exists(good)
    # A request that fails while the object is copied is "not checked", never damage.
    storage.write_bytes(inside, local.read_bytes())
    real = storage.local_copy

    def failing(path):
        raise storage.StorageError(f"{path}: 503 Slow Down")

    monkeypatch.setattr(storage, "local_copy", failing)
    verdict = verify(s3_root, pages=True, remove=True)
    assert verdict.damaged == {} and len(verdict.unchecked) == 2
    assert storage.exists(inside) and storage.exists(good)
    monkeypatch.setattr(storage, "local_copy", real)


def _local_or_s3(where, tmp_path, request) -> str:
    """A local data dir, or a bucket prefix on SeaweedFS (``where`` "s3")."""
    if where == "s3":
        if weed_binary() is None:
            pytest.skip("needs the weed binary")
        return request.getfixturevalue("s3_root")
    return str(tmp_path / "data")


def _write_kept(data, files: dict[str, bool]):
    """A one-row Parquet file for each path of ``files`` marked kept; the data dir's root."""
    root = storage.data_path(data)
    for rel, kept in files.items():
        if kept:
            storage.write_parquet(root / rel, pa.table({"x": [1]}))
    return root


def _write_state(root, stage, trade_type, tag, symbol, state):
    from crypto_lakehouse import layout

    storage.write_json(layout.state_path(root, stage, trade_type, tag, symbol), state)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_files_a_symbols_record_names_and_that_are_gone_are_missing(
    where, tmp_path, request, monkeypatch, capsys
):
    """A symbol's files deleted outside a run inside folders that are still there: each
    stage's state names the files its last run held (as the stages write it)."""
    monkeypatch.chdir(tmp_path)
    data = _local_or_s3(where, tmp_path, request)
    files = {
        "parsed_data/spot/klines/AUSDT/1m/202401.pqt": True,
        "parsed_data/spot/klines/AUSDT/1m/202402.pqt": False,
        "parsed_data/um_futures/funding/AUSDT.pqt": False,
        "results_data/spot/klines/1m/SP0_AUSDT.pqt": True,
        "results_data/spot/klines/1m/AUSDT.pqt": False,
        "results_data/spot/resampled_klines/1h/0m/AUSDT.pqt": False,
        "results_data/spot/features/1m/AUSDT.pqt": True,
        "results_data/spot/klines/1m/BUSDT.pqt": True,
    }
    root = _write_kept(data, files)
    _write_state(root, "aws_parse", "spot", "klines-1m", "AUSDT",
                 {"partitions": {"202401": {}, "202402": {}}})  # fmt: skip
    _write_state(root, "aws_parse", "um_futures", "funding", "AUSDT", {"written": True})
    _write_state(root, "aws_parse", "um_futures", "funding", "BUSDT", {"written": False})
    segments = [{"file": "results_data/spot/klines/1m/SP0_AUSDT.pqt"},
                {"file": "results_data/spot/klines/1m/AUSDT.pqt"}]  # fmt: skip
    _write_state(root, "gen_kline", "spot", "klines-1m", "AUSDT",
                 {"fingerprint": "x", "report": {"segments": segments}})  # fmt: skip
    _write_state(root, "gen_kline", "spot", "klines-1m", "BUSDT",
                 {"report": {"segments": [{"file": "results_data/spot/klines/1m/BUSDT.pqt"}]}})  # fmt: skip
    outputs = [{"file": "results_data/spot/resampled_klines/1h/0m/AUSDT.pqt"}]
    _write_state(root, "resample", "spot", "klines-1m", "AUSDT", {"report": {"outputs": outputs}})
    features = [{"file": "results_data/spot/features/1m/AUSDT.pqt"}]
    _write_state(root, "features", "spot", "klines-1m", "AUSDT", {"section": {"outputs": features}})

    verdict = verify(data, jobs=4)
    assert sorted(verdict.missing) == sorted(rel for rel, kept in files.items() if not kept)
    assert verdict.missing["results_data/spot/klines/1m/AUSDT.pqt"] == (
        "held after the last gen_kline run of AUSDT "
        "(lakehouse/state/gen_kline/spot/klines-1m/AUSDT.json)"
    )
    assert verdict.damaged == {} and verdict.exit_code == 1
    if where == "local":  # the command line (on S3 it takes the endpoint's options)
        assert main(["verify", data]) == 1
        out = capsys.readouterr().out
        assert "0 damaged, 4 missing" in out and "--forcerun aws_download_shard" in out


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_symbols_quality_and_provenance_records_gone_are_missing(where, tmp_path, request):
    """The Parquet records below ``lakehouse/`` deleted outside a run in folders that are
    still there (the start checks only the folders): the parse state of a symbol whose
    archives built partitions names its quality record (a kline-layout dataset's too), the
    REST klines' record of its archive days its day provenance."""
    data = _local_or_s3(where, tmp_path, request)
    files = {
        "parsed_data/spot/klines/AUSDT/1m/202401.pqt": True,
        "parsed_data/spot/klines/BUSDT/1m/202401.pqt": True,
        "parsed_data/um_futures/markPriceKlines/AUSDT/1m/202401.pqt": True,
        "lakehouse/quality/spot/1m/AUSDT.pqt": True,
        "lakehouse/quality/spot/1m/BUSDT.pqt": False,
        "lakehouse/quality/um_futures/1m/markPriceKlines/AUSDT.pqt": False,
        "lakehouse/provenance/spot/1m/AUSDT.pqt": True,
        "lakehouse/provenance/spot/1m/BUSDT.pqt": False,
    }
    root = _write_kept(data, files)
    parsed = {"files": {"k.zip": "sha"}, "partitions": {"202401": {}}}
    for trade_type, tag, symbol in (("spot", "klines-1m", "AUSDT"), ("spot", "klines-1m", "BUSDT"),
                                    ("um_futures", "markPriceKlines-1m", "AUSDT")):  # fmt: skip
        _write_state(root, "aws_parse", trade_type, tag, symbol, parsed)
    # A symbol whose archives built no partition has no quality record.
    _write_state(root, "aws_parse", "spot", "klines-1m", "CUSDT", {"files": {}, "partitions": {}})
    for symbol in ("AUSDT", "BUSDT"):
        _write_state(root, "api_download_archive_days", "spot", "klines-1m", symbol,
                     {"version": 1, "partitions": {"202401.pqt": {}}})  # fmt: skip

    verdict = verify(data, jobs=4)
    assert sorted(verdict.missing) == sorted(rel for rel, kept in files.items() if not kept)
    assert verdict.missing["lakehouse/provenance/spot/1m/BUSDT.pqt"] == (
        "held after the last api_download run of BUSDT "
        "(lakehouse/state/api_download_archive_days/spot/klines-1m/BUSDT.json)"
    )
