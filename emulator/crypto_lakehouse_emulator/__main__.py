"""Run the emulator in the foreground: ``python -m crypto_lakehouse_emulator --mirror DIR``.

Prints the base URL on stdout (first line) and serves until interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .faults import Faults
from .server import Emulator
from .synthetic import PRICE_LEVEL, SyntheticUniverse


def _keys(text: str | None) -> set[str]:
    return {k.strip() for k in (text or "").split(",") if k.strip()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m crypto_lakehouse_emulator", description=__doc__)
    p.add_argument("--mirror", help="archive mirror directory (files at DIR/<bucket key>)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: ephemeral)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction answered 500/503")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of GETs cut mid-body")
    p.add_argument("--corrupt-first", help="comma-separated keys corrupt on the first GET only")
    p.add_argument("--corrupt-always", help="comma-separated keys always corrupt")
    p.add_argument("--missing-checksum", help="comma-separated zip keys without CHECKSUM")
    p.add_argument("--fail-always", help="comma-separated keys always answered 500")
    p.add_argument("--faults-on-rest", action="store_true", help="latency/5xx also on REST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--synthetic",
        metavar="N_SPOT,N_UM,N_CM,DAYS,START",
        help="add a synthetic universe, e.g. 1000,300,50,30,2024-01-01",
    )
    p.add_argument(
        "--rest",
        action="store_true",
        help="also serve the REST API (time, exchangeInfo, klines, fundingRate) with seeded "
        "synthetic candles and funding for every kline symbol of the mirror and the "
        "synthetic universe, so that a whole pipeline runs offline",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p.parse_args(argv)


# Synthetic REST history: candles from this time on, funding every 8 h from it.
_REST_START_MS = 1_483_228_800_000  # 2017-01-01 UTC


def mirror_kline_symbols(mirror_dir) -> dict[str, set[str]]:
    """``{trade_type: {symbol, ...}}`` of the kline folders of an archive mirror."""
    from crypto_lakehouse import layout

    found = {}
    for trade_type in layout.TRADE_TYPES:
        found[trade_type] = set()
        for period in ("daily", "monthly"):
            base = Path(mirror_dir) / layout.kline_symbols_prefix(trade_type, period)
            if base.is_dir():
                found[trade_type] |= {d.name for d in base.iterdir() if d.is_dir()}
    return found


def mirror_price_levels(mirror_dir, symbols: dict[str, set[str]]) -> dict:
    """``{(trade_type, symbol): the last close}`` of each symbol's newest kline archive in
    the mirror (any interval; symbols without a readable one are left out)."""
    import zipfile

    from crypto_lakehouse import layout

    levels = {}
    for trade_type, names in symbols.items():
        for symbol in names:
            zips = [
                z
                for period in ("monthly", "daily")
                for z in Path(
                    mirror_dir, layout.kline_symbols_prefix(trade_type, period), symbol
                ).glob("*/*.zip")
            ]
            if not zips:
                continue
            # SYMBOL-INTERVAL-DATE.zip: a day sorts after its month ("2020-01-03" > "2020-01").
            newest = max(zips, key=lambda z: z.stem.split("-", 2)[-1])
            try:
                with zipfile.ZipFile(newest) as archive:
                    last_row = (
                        archive.read(archive.namelist()[0]).decode().strip().rsplit("\n", 1)[-1]
                    )
                levels[(trade_type, symbol)] = float(last_row.split(",")[4])  # the close
            except (OSError, ValueError, IndexError, zipfile.BadZipFile):
                continue
    return levels


def synthetic_rest(symbols: dict[str, set[str]], mirror_dir=None, price_levels=None):
    """A REST side answering for these symbols with seeded synthetic data (wall-clock now);
    funding of the months ``mirror_dir`` holds archives of is the archives' events.
    ``price_levels``: ``{(trade_type, symbol): price}`` the synthetic candles wave around
    (the archive's level, so that the REST days do not jump from the archive's prices:
    features and charts of a demo would show a crash); 100 for the others."""
    import time

    from .rest import RestEmulator

    rest = RestEmulator()
    now_ms = int(time.time() * 1000)
    price_levels = price_levels or {}
    for trade_type, names in symbols.items():
        for i, symbol in enumerate(sorted(names)):
            rest.add_synthetic_klines(
                trade_type,
                symbol,
                start_ms=_REST_START_MS,
                seed=i,
                base_price=price_levels.get((trade_type, symbol), 100.0),
            )
            if trade_type != "spot":
                rest.add_synthetic_funding(
                    trade_type,
                    symbol,
                    start_ms=_REST_START_MS,
                    end_ms=now_ms,
                    seed=i,
                    mirror_dir=mirror_dir,
                )
    return rest


def build(args: argparse.Namespace) -> Emulator:
    faults = Faults(
        latency=args.latency,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        corrupt_first=_keys(args.corrupt_first),
        corrupt_always=_keys(args.corrupt_always),
        missing_checksum=_keys(args.missing_checksum),
        fail_always=_keys(args.fail_always),
        apply_to_rest=args.faults_on_rest,
        seed=args.seed,
    )
    listing = None
    if args.synthetic:
        n_spot, n_um, n_cm, days, start = args.synthetic.split(",")
        listing = SyntheticUniverse(int(n_spot), int(n_um), int(n_cm), int(days), start)
    if args.mirror is None and listing is None:
        raise SystemExit("give --mirror DIR and/or --synthetic ...")
    rest = None
    if args.rest:
        symbols = mirror_kline_symbols(args.mirror) if args.mirror else {}
        levels = mirror_price_levels(args.mirror, symbols) if args.mirror else {}
        if listing is not None:
            for trade_type in ("spot", "um_futures", "cm_futures"):
                names = listing.symbols(trade_type)
                symbols.setdefault(trade_type, set()).update(names)
                levels.update(((trade_type, name), PRICE_LEVEL) for name in names)
        rest = synthetic_rest(symbols, args.mirror, levels)
    return Emulator(mirror_dir=args.mirror, faults=faults, listing=listing, rest=rest)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    emu = build(args)
    emu.start(port=args.port)
    print(emu.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        print(dict(emu.counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
