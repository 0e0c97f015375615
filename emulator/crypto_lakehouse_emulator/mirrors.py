"""Test mirrors built from real Binance files (the tests keep them in ``tests/fixtures``).

``real_mirror`` returns a manifest ``{key: provenance}`` that says, per object, whether its
bytes are Binance's (``exact``) or were put together here (``constructed: …``):

- ``legacy-v1-real/mirror/`` is copied unchanged. Its own README tells which of those files
  are exact Binance files (the spot 2020-01-01..03 zips and CHECKSUMs, the um and cm zips) and
  which were constructed for that fixture (the 2024-12-31 / 2025-01-01 spot zips around exact
  CSV members, and the CHECKSUMs of those and of the um/cm zips); the manifest repeats that.
- ``funding=True`` adds ``BTCUSDT-fundingRate-2026-08.zip``: the real monthly funding CSV as
  its member (exact CSV bytes), in a zip and with a CHECKSUM made here.
- ``extras=True`` adds the exact spot 1h (2022-09-07) and um ETHUSDT 1h (2022-08-24) zips with
  CHECKSUMs computed here (no real sidecar exists for them).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from crypto_lakehouse import layout
from crypto_lakehouse.io import write_bytes

from .generate import checksum_bytes, zip_bytes

# From legacy-v1-real/README.md §1 ("Which files are exact Binance files").
_LEGACY_CONSTRUCTED = {
    "BTCUSDT-1m-2024-12-31.zip": "constructed: zip around the exact Binance CSV member",
    "BTCUSDT-1m-2025-01-01.zip": "constructed: zip around the exact Binance CSV member",
    "BTCUSDT-1m-2024-12-31.zip.CHECKSUM": "constructed: computed sidecar",
    "BTCUSDT-1m-2025-01-01.zip.CHECKSUM": "constructed: computed sidecar",
    "BTCUSDT-1m-2022-09-05.zip.CHECKSUM": "constructed: computed sidecar",
    "BTCUSD_PERP-1m-2022-10-24.zip.CHECKSUM": "constructed: computed sidecar",
}


def _fixtures(fixtures_dir) -> Path:
    root = Path(fixtures_dir)
    if not (root / "real").is_dir() or not (root / "legacy-v1-real").is_dir():
        raise FileNotFoundError(
            f"fixture folder not found: {root} (expected real/ and legacy-v1-real/ in it)"
        )
    return root


def _add_zip_with_checksum(dest: Path, key: str, data: bytes, newline: bool) -> None:
    write_bytes(dest / key, data)
    name = key.rsplit("/", 1)[1]
    write_bytes(dest / f"{key}.CHECKSUM", checksum_bytes(name, data, newline))


def real_mirror(
    dest: str | Path, fixtures_dir: str | Path, *, funding: bool = True, extras: bool = False
) -> dict[str, str]:
    """Fill ``dest`` (``dest/<key>``) with real archive objects; returns ``{key: provenance}``."""
    root = _fixtures(fixtures_dir)
    dest = Path(dest)
    manifest: dict[str, str] = {}
    legacy = root / "legacy-v1-real" / "mirror"
    for path in sorted(p for p in legacy.rglob("*") if p.is_file()):
        key = path.relative_to(legacy).as_posix()
        write_bytes(dest / key, path.read_bytes())
        manifest[key] = _LEGACY_CONSTRUCTED.get(path.name, "exact")

    if funding:
        csv_path = root / "real" / "futures_um" / "fundingRate" / "BTCUSDT-fundingRate-2026-08.csv"
        key = layout.funding_key("um_futures", "BTCUSDT", "2026-08")
        data = zip_bytes(csv_path.name, csv_path.read_bytes(), datetime(2026, 9, 1))
        _add_zip_with_checksum(dest, key, data, newline=True)
        manifest[key] = "constructed: zip around the real funding CSV (CSV bytes transcribed)"
        manifest[key + ".CHECKSUM"] = "constructed: computed sidecar"

    if extras:
        for trade_type, symbol, rel in (
            ("spot", "BTCUSDT", "spot/BTCUSDT-1h-2022-09-07.zip"),
            ("um_futures", "ETHUSDT", "futures_um/ETHUSDT-1h-2022-08-24.zip"),
        ):
            day = rel.rsplit("-1h-", 1)[1][: -len(".zip")]
            key = layout.daily_kline_key(trade_type, symbol, "1h", day)
            _add_zip_with_checksum(
                dest, key, (root / "real" / rel).read_bytes(), newline=trade_type != "spot"
            )
            manifest[key] = "exact"
            manifest[key + ".CHECKSUM"] = "constructed: computed sidecar"
    return manifest
