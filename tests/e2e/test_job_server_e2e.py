"""A real run with the job server (config job_server, crypto_lakehouse/job_server.py) forks
its jobs from the server and builds the same files as a run without it."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from tests.chaos import chaos_helpers as h

pytestmark = pytest.mark.e2e

FORKED_LINE = "run by the run's job server"


def _job_logs(data):
    return sorted(p for p in (data / "lakehouse" / "logs").rglob("*") if p.is_file())


def test_a_run_forks_its_jobs_from_the_server_and_builds_the_same_files(tmp_path):
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    snapshots = {}
    try:
        for switch in (True, False):
            data = tmp_path / f"data_{switch}"
            config = tmp_path / f"config_{switch}.json"
            config.write_text(
                json.dumps({**h.config_for(emu.base_url, data), "job_server": switch})
            )
            proc = h.run(tmp_path, config)
            assert proc.returncode == 0, proc.stderr[-4000:]
            logs = _job_logs(data)
            forked = [p for p in logs if FORKED_LINE in p.read_text()]
            assert logs and forked == (logs if switch else []), [p.name for p in logs]
            # The server ended with the run and took its socket along.
            assert not (data / "lakehouse" / "job_server.sock").exists()
            assert not any(tmp_path.rglob("*.sock"))
            # The jobs' own figures beside their benchmark tables (the report reads them).
            tables = sorted((data / "lakehouse" / "benchmarks").rglob("*.tsv"))
            figures = [t.with_name(t.name.removesuffix(".tsv") + ".node.json") for t in tables]
            assert tables and [f.exists() for f in figures] == [switch] * len(tables)
            snapshots[switch] = h.snapshot(data)
    finally:
        emu.stop()
    assert h.differences(snapshots[True], snapshots[False]) == []


def test_a_dry_run_starts_no_server(tmp_path):
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(h.config_for(emu.base_url, tmp_path / "data")))
        # A socket no server listens on: a server of the dry run would replace it.
        stale = tmp_path / "data" / "lakehouse" / "job_server.sock"
        stale.parent.mkdir(parents=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(stale))
        sock.close()
        before = stale.stat().st_ino
        proc = h.run(tmp_path, config, "--dry-run")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert stale.exists() and stale.stat().st_ino == before
    finally:
        emu.stop()


def test_ctrl_c_stops_the_forked_jobs_and_the_server_and_a_rerun_completes(tmp_path):
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    data = tmp_path / "data"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(h.config_for(emu.base_url, data)))
    try:
        proc = h.start(tmp_path, config, tmp_path / "run.log")  # its own process group
        logs = data / "lakehouse" / "logs"

        def a_forked_job_runs():
            found = [p for p in logs.rglob("*.log")] if logs.is_dir() else []
            return any(FORKED_LINE in p.read_text() for p in found)

        assert h.wait_for(a_forked_job_runs, timeout=120), (tmp_path / "run.log").read_text()
        server_pids = _server_pids(tmp_path)
        assert server_pids
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
        proc.wait(120)
        out = (tmp_path / "run.log").read_text()
        assert proc.returncode != 0, out[-3000:]
        # The server and every job it forked are gone, and its socket with them.
        assert h.wait_for(lambda: not _server_pids(tmp_path), timeout=60)
        assert not (data / "lakehouse" / "job_server.sock").exists()
        rerun = h.run(tmp_path, config)
        assert rerun.returncode == 0, rerun.stderr[-4000:]
    finally:
        emu.stop()


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _command_lines():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read().split(b"\0")
            except OSError:
                continue


def _server_pids(tmp_path) -> list[int]:
    """This test's server and the jobs it forked (a fork keeps the server's command line,
    which names the socket in this test's run directory)."""
    mine = str(tmp_path).encode()
    return [
        pid
        for pid, argv in _command_lines()
        if b"crypto_lakehouse.job_server" in argv and any(mine in a for a in argv) and _alive(pid)
    ]
