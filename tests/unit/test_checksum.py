"""CHECKSUM sidecar parsing and streaming SHA-256 (binance-facts §3)."""

import hashlib
from pathlib import Path

import pytest

from crypto_lakehouse.archive.checksum import ChecksumFormatError, parse_checksum, sha256_file
from tests.conftest import FIXTURES

SPOT_DIR = FIXTURES / "legacy-v1-real" / "mirror" / "data" / "spot" / "daily" / "klines"
UM_DIR = FIXTURES / "legacy-v1-real" / "mirror" / "data" / "futures" / "um" / "daily" / "klines"
SPOT_ZIP = SPOT_DIR / "BTCUSDT" / "1m" / "BTCUSDT-1m-2020-01-01.zip"
UM_ZIP = UM_DIR / "BTCUSDT" / "1m" / "BTCUSDT-1m-2022-09-05.zip"
DIGEST = "ab" * 32


def test_real_spot_sidecar_without_newline_matches_its_zip():
    raw = Path(f"{SPOT_ZIP}.CHECKSUM").read_bytes()
    assert not raw.endswith(b"\n")  # the fixture is the no-newline variant
    line = parse_checksum(raw, source=str(SPOT_ZIP))
    assert line.file_name == SPOT_ZIP.name
    assert line.sha256 == hashlib.sha256(SPOT_ZIP.read_bytes()).hexdigest()


def test_real_um_sidecar_with_newline_matches_its_zip():
    raw = Path(f"{UM_ZIP}.CHECKSUM").read_bytes()
    assert raw.endswith(b"\n")
    line = parse_checksum(raw)
    assert line.file_name == UM_ZIP.name
    assert line.sha256 == sha256_file(UM_ZIP)


@pytest.mark.parametrize(
    "text",
    [
        f"{DIGEST}  X.zip",
        f"{DIGEST}  X.zip\n",
        f"{DIGEST}  X.zip\r\n",
        f"  {DIGEST}\tX.zip \n\n",
        f"{DIGEST.upper()}  X.zip",
    ],
)
def test_whitespace_variants_parse_to_the_same_line(text):
    line = parse_checksum(text)
    assert (line.sha256, line.file_name) == (DIGEST, "X.zip")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "got 0 token"),
        (f"{DIGEST}", "got 1 token"),
        (f"{DIGEST}  X.zip  extra", "got 3 token"),
        (f"{DIGEST}  X.zip\n{DIGEST}  Y.zip\n", "got 4 token"),
        ("nothex" + "0" * 58 + "  X.zip", "not a 64-digit hex"),
        ("abc  X.zip", "not a 64-digit hex"),
        ("<Error><Code>NoSuchKey</Code></Error>", "got 1 token"),
    ],
)
def test_bad_formats_raise_a_clear_error_naming_the_source(text, message):
    with pytest.raises(ChecksumFormatError, match=message) as info:
        parse_checksum(text, source="data/x/X.zip.CHECKSUM")
    assert "data/x/X.zip.CHECKSUM" in str(info.value)


def test_non_ascii_bytes_are_a_format_error():
    with pytest.raises(ChecksumFormatError, match="not ASCII"):
        parse_checksum(b"\xff\xfe" + DIGEST.encode() + b"  X.zip", source="k")


def test_sha256_file_streams_multi_chunk_files(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB, several 1 MiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()
