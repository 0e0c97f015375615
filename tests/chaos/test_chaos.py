"""Chaos suite (issue 13): kill -9 at random moments, a concurrent run, a server that dies
mid-run, and a corpus of hostile archives, against the emulator.

Every scenario ends with the same check: the outputs equal those of an undisturbed run
(Parquet by table content, ``aws_data`` and the JSON records by bytes), no temp file is
left, and no file is lost. The kill moments are drawn from a seeded generator: the seed
is printed (``CHAOS_SEED=<n>`` replays a run). Figures are printed at the end of each test
(run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest
from crypto_lakehouse_emulator import Faults

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.hostile import write_zip_bomb

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

VICTIM = "SOLUSDT"  # the symbol the hostile corpus replaces (the others must not notice)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The scenario and one undisturbed run of it: (mirror, snapshot, number of reports)."""
    root = tmp_path_factory.mktemp("baseline")
    mirror = h.build_scenario(root)
    emu = h.start_emulator(mirror)
    try:
        config = root / "config.json"
        config.write_text(json.dumps(h.config_for(emu.base_url, root / "data")))
        proc = h.run(root, config)
        assert proc.returncode == 0, proc.stderr[-4000:]
    finally:
        emu.stop()
    reports = len(list((root / "data" / "lakehouse" / "reports").rglob("*.json")))
    return mirror, h.snapshot(root / "data"), reports


def _reports(data: Path) -> int:
    folder = data / "lakehouse" / "reports"
    return len(list(folder.rglob("*.json"))) if folder.is_dir() else 0


def _stale_snakemake_locks(workdir: Path) -> int:
    folder = workdir / ".snakemake" / "locks"
    return len(list(folder.glob("*.lock"))) if folder.is_dir() else 0


def test_kill_9_at_random_moments_then_plain_reruns(tmp_path, baseline):
    mirror, expected, n_reports = baseline
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"\nchaos seed: {seed} (CHAOS_SEED={seed} replays the kill moments)")
    rng = random.Random(seed)
    # 8 % of archive requests fail (500/503): retries on top of the kills.
    emu = h.start_emulator(mirror, faults=Faults(fail_rate=0.08, seed=seed))
    data = tmp_path / "data"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(h.config_for(emu.base_url, data)))
    # Kill once the run has finished this many jobs (reports on disk), plus a random delay:
    # the moments spread over the whole pipeline, planning included (target 0). The last few
    # jobs (summaries, report page) take well under a second each: a moment among them plus
    # a long delay often found the run already finished, and that kill did not happen.
    targets = sorted(rng.sample(range(n_reports - 4), 6))
    kills, stale_locks, refused, server_restarts, temps_after_kill = 0, 0, 0, 0, 0
    planted: list[Path] = []
    try:
        for i, target in enumerate(targets):
            proc = h.start(tmp_path, config, tmp_path / f"run{i}.log")
            if i == 1:
                refused += _second_run_is_refused(tmp_path, config, data, proc)
            if i == 3:
                server_restarts += _restart_server_mid_run(emu, data, proc)
            h.wait_for(lambda p=proc, t=target: _reports(data) >= t or p.poll() is not None, 180)
            time.sleep(rng.uniform(0.0, 0.75))
            if proc.poll() is None:
                h.kill_group(proc)
                kills += 1
                stale_locks += _stale_snakemake_locks(tmp_path) > 0
                temps_after_kill += len(h.temp_files(data))
                if kills == 1:
                    planted = _plant_temps(data)
            else:
                proc.wait()
        final = h.run(tmp_path, config)  # the same command again: no --unlock, no flags
        assert final.returncode == 0, final.stderr[-6000:]
        faults = emu.counts["fault_5xx"]
    finally:
        emu.stop()
    got = h.snapshot(data)
    lost = sorted(set(expected) - set(got))
    print(
        f"chaos figures: kills survived {kills} (stale Snakemake locks recovered after "
        f"{stale_locks}, temp files left by the kills {temps_after_kill}, planted "
        f"{len(planted)}), concurrent runs "
        f"refused {refused}, server restarts {server_restarts}, injected 5xx {faults}, "
        f"files lost {len(lost)}"
    )
    # Run 3 often ends by itself: while the test holds the server down for 2 s and restarts
    # it, the small scenario's run gets to its end (seen: rc 0, every report written). Of the
    # other five, one may finish in the moment before its kill on a fast machine.
    assert kills >= 4 and len(planted) == 4
    assert refused == 1 and server_restarts == 1
    assert lost == []
    diff = h.differences(expected, got)
    assert diff == [], diff
    assert h.temp_files(data) == []
    assert _stale_snakemake_locks(tmp_path) == 0


def _plant_temps(data: Path) -> list[Path]:
    """Temp files as a kill in the middle of a write leaves them (the chance that a kill
    lands inside one of these short writes is small, so some are made on purpose)."""
    pid = 999_999_999  # no such process
    paths = [
        layout.parsed_klines_dir(data, "spot", "BTCUSDT", "1m") / f".tmp-202402.pqt.{pid}-1-0.part",
        layout.results_klines_dir(data, "spot", "1m") / f".tmp-ETHUSDT.pqt.{pid}-1-0.part",
        layout.api_klines_dir(data, "spot", "SOLUSDT", "1m") / f".tmp-x.pqt.{pid}-1-0.part",
        layout.lakehouse_dir(data) / f"reports/gen_kline/spot/.tmp-BTCUSDT.json.{pid}-1-0.part",
    ]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    return paths


def _second_run_is_refused(tmp_path, config, data, first) -> int:
    """Start the same config from another directory while ``first`` runs."""
    assert h.wait_for(lambda: _holder_pid(data) == first.pid, 60), "the run took no lock"
    other = tmp_path / "elsewhere"
    other.mkdir(exist_ok=True)
    started = time.monotonic()
    second = h.run(other, config, timeout=120)
    took = time.monotonic() - started
    assert second.returncode != 0
    holder = json.loads((data / "lakehouse" / "run.lock").read_text())
    message = (
        f"is in use by another run: PID {first.pid} on host {socket.gethostname()}, "
        f"started {holder['started']}"
    )
    assert message in second.stderr, second.stderr[-3000:]
    assert "Select jobs to execute" not in second.stdout + second.stderr
    print(f"second run refused in {took:.1f} s")
    # A dry run neither takes nor waits for the lock.
    assert h.run(other, config, "-n", timeout=120).returncode == 0
    return 1


def _holder_pid(data: Path) -> int | None:
    try:
        return json.loads((data / "lakehouse" / "run.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _restart_server_mid_run(emu, data, proc) -> int:
    """Stop the emulator once this run has started downloading; serve again 2 s later."""
    h.wait_for(lambda: (data / "aws_data").exists() or proc.poll() is not None, 120)
    if proc.poll() is not None:
        return 0
    port = emu.port
    emu.stop()
    time.sleep(2.0)
    emu.start(port)
    return 1


# ---------------------------------------------------------------- hostile archives
def _member(zip_path: Path) -> bytes:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.read(zf.namelist()[0])


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _edit_line(data: bytes, line: int, change) -> bytes:
    lines = data.split(b"\n")
    lines[line - 1] = change(lines[line - 1])
    return b"\n".join(lines)


def _to_us(line: bytes) -> bytes:
    fields = line.split(b",")
    fields[0] = fields[0] + b"000"
    fields[6] = fields[6] + b"999"
    return b",".join(fields)


def _with_checksum(path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}")


def hostile_corpus(mirror: Path) -> dict[str, str]:
    """Replace VICTIM's days with defective archives; returns {key: text the reason must
    contain}. Keys with a line to name give it."""
    key = {d: layout.daily_kline_key("spot", VICTIM, "1m", d) for d in h.DAYS}
    path = {d: mirror / k for d, k in key.items()}
    good = {d: _member(p) for d, p in path.items()}
    name = {d: Path(k).name.replace(".zip", ".csv") for d, k in key.items()}
    d = h.DAYS
    expect: dict[str, str] = {}

    def bad_value(ln):
        return b",".join([ln.split(b",")[0], b"7x1.5", *ln.split(b",")[2:]])

    _zip(path[d[0]], {name[d[0]]: _edit_line(good[d[0]], 17, bad_value)})
    expect[key[d[0]]] = "line 17: field 'open' is not a number: '7x1.5'"
    _zip(path[d[1]], {name[d[1]]: _edit_line(good[d[1]], 5, lambda ln: ln.rsplit(b",", 1)[0])})
    expect[key[d[1]]] = "line 5: 11 fields, expected 12"
    _zip(path[d[2]], {})
    expect[key[d[2]]] = "zip has no member (empty archive)"
    path[d[3]].write_bytes(b"")
    expect[key[d[3]]] = "not a readable zip"
    _zip(path[d[4]], {name[d[4]]: good[d[4]], "extra.csv": good[d[4]]})
    expect[key[d[4]]] = "zip has 2 members"
    write_zip_bomb(path[d[5]], 12 << 20, member=name[d[5]])
    expect[key[d[5]]] = "over the inflated-size cap of 8388608 bytes"
    mixed = b"\n".join(
        _to_us(ln) if i >= 99 and ln else ln for i, ln in enumerate(good[d[6]].split(b"\n"))
    )
    _zip(path[d[6]], {name[d[6]]: mixed})
    # Read as µs (the largest value decides), the ms rows from line 1 on are decades off.
    expect[key[d[6]]] = "line 1: time 1970-01-20"
    for day in d[:7]:
        _with_checksum(path[day])
    path[d[7]].with_name(path[d[7]].name + ".CHECKSUM").write_text("<html>503</html>\n")
    expect[key[d[7]]] = "CHECKSUM: expected '<sha256> <file name>', got 1 token(s)"
    # Names that are not the dataset's: refused by the listing, never fetched.
    folder = path[d[8]].parent
    for odd in (f"..{VICTIM}-1m-{d[8]}.zip", f"{VICTIM}-1m-{d[8]}%2F..%2F.zip"):
        shutil.copy(path[d[8]], folder / odd)
        _with_checksum(folder / odd)
    return expect


def test_hostile_archives_are_quarantined_and_nobody_else_notices(tmp_path, baseline):
    clean_mirror, expected, _ = baseline
    mirror = tmp_path / "mirror"
    shutil.copytree(clean_mirror, mirror)
    expect = hostile_corpus(mirror)
    emu = h.start_emulator(mirror)
    data = tmp_path / "data"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(h.config_for(emu.base_url, data)))
    try:
        proc = h.run(tmp_path, config)
    finally:
        emu.stop()
    # The victim's gen_kline / resample may fail their gates on a sparse symbol; the others
    # must not be affected, whatever the victim does.
    report = json.loads(
        (data / f"lakehouse/reports/aws_parse/spot/klines-1m/{VICTIM}.json").read_text()
    )
    quarantined = report["quarantined"]
    for key, text in expect.items():
        assert key in quarantined, (key, sorted(quarantined), proc.stderr[-3000:])
        assert quarantined[key].startswith(key) and text in quarantined[key], quarantined[key]
    index = json.loads((data / "lakehouse/listing/spot/klines-1m.json").read_text())
    refused = {r["key"]: r["reason"] for r in index["refused_files"]}
    assert len(refused) == 4 and all(VICTIM in k for k in refused)  # two zips, two CHECKSUMs
    got = h.snapshot(data)
    others = [s for s in h.SYMBOLS if s != VICTIM]
    pattern = re.compile(rf"(^|[/_])({'|'.join(others)})([/.]|$)")
    mine = {k: v for k, v in got.items() if pattern.search(k)}
    theirs = {k: v for k, v in expected.items() if pattern.search(k)}
    assert h.differences(theirs, mine) == []
    assert h.temp_files(data) == []
    print(
        f"\nhostile corpus: {len(expect)} bad archives quarantined, {len(refused)} listed "
        f"names refused, {len(theirs)} files of the other symbols unchanged"
    )
