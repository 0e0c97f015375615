"""A real run with the job server (config job_server, crypto_lakehouse/job_server.py) forks
its jobs from the server and builds the same files as a run without it."""

from __future__ import annotations

import json
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
