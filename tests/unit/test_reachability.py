"""Unreachable hosts: classified once, never retried, and checked before a run starts."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest
import requests

from crypto_lakehouse.archive import connections, http
from crypto_lakehouse.failures import (
    failed_jobs,
    failure_lines,
    failure_report,
    last_error_line,
)
from crypto_lakehouse.reachability import (
    Endpoint,
    preflight,
    probe,
    report,
    unreachable_cause,
    workflow_endpoints,
)
from crypto_lakehouse.rest.client import RestClient
from crypto_lakehouse.rest.limiter import HostStopped, WindowLimiter

UNRESOLVABLE = "http://archive.crypto-lakehouse.invalid"  # RFC 2606: never resolves


@pytest.fixture
def closed_port_url():
    """A local port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def plain_tcp_url():
    """A server that answers a TLS ClientHello with plain text: the handshake fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def _requests_error(url):
    try:
        requests.get(url, timeout=5)
    except requests.RequestException as exc:
        return exc
    raise AssertionError(f"{url} answered")


def test_causes_are_classified(closed_port_url, plain_tcp_url):
    assert unreachable_cause(_requests_error(closed_port_url)) == "connection refused"
    assert unreachable_cause(_requests_error(UNRESOLVABLE)).startswith("name resolution failed")
    assert unreachable_cause(_requests_error(plain_tcp_url)).startswith("TLS failure")
    assert unreachable_cause(socket.gaierror(-2, "Name or service not known")) == (
        "name resolution failed (Name or service not known)"
    )
    assert unreachable_cause(ConnectionRefusedError(111, "refused")) == "connection refused"
    assert unreachable_cause(OSError(113, "No route to host")).startswith("host unreachable")
    assert unreachable_cause(ssl.SSLCertVerificationError("bad cert")).startswith("TLS failure")
    # Transient: retried as before.
    assert unreachable_cause(TimeoutError("timed out")) is None
    assert unreachable_cause(ConnectionResetError(104, "reset")) is None
    assert unreachable_cause(requests.exceptions.ChunkedEncodingError("cut")) is None


def test_listing_get_fails_at_once_without_retries(closed_port_url, monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 10.0)  # a retry would take seconds
    retries = []
    session = http.new_session()
    started = time.monotonic()
    with pytest.raises(http.Unreachable, match="connection refused"):
        http.get_with_retries(
            session, closed_port_url + "/x", timeout_s=5, max_retries=5, on_retry=retries.append
        )
    assert retries == []
    assert time.monotonic() - started < 2


def test_download_connection_fails_as_unreachable(closed_port_url):
    async def get(url):
        async with connections.Downloader(2, timeout_s=5) as downloader:
            return await downloader.get_bytes(url)

    with pytest.raises(http.Unreachable, match="connection refused"):
        asyncio.run(get(closed_port_url + "/data/x.zip"))
    with pytest.raises(http.Unreachable, match="name resolution failed"):
        asyncio.run(get(UNRESOLVABLE + "/data/x.zip"))


def test_rest_client_stops_the_host_without_retries(closed_port_url):
    client = RestClient(
        closed_port_url,
        "um_futures",
        weight_limiter=WindowLimiter(2400),
        max_retries=5,
        backoff_base_s=10.0,
    )
    started = time.monotonic()
    with pytest.raises(HostStopped, match="cannot reach the host: connection refused"):
        client.get_json("/klines", {"symbol": "BTCUSDT"})
    assert time.monotonic() - started < 2
    assert client.stats.retries == 0


def test_probe_accepts_any_http_answer(emulator, closed_port_url):
    emu = emulator()
    # The emulator answers 404 for an unknown path: the host is there.
    assert probe(Endpoint("endpoints.archive", f"{emu.base_url}/nothing", emu.base_url)) is None
    failure = probe(Endpoint("endpoints.um_api", closed_port_url + "/fapi/v1/ping", "x"))
    assert failure.cause == "connection refused"


def test_preflight_reports_one_line_per_endpoint(closed_port_url, emulator):
    emu = emulator()
    config = {
        "endpoints": {
            "listing": emu.base_url,
            "archive": emu.base_url,
            "spot_api": closed_port_url,
            "um_api": UNRESOLVABLE,
            "cm_api": emu.base_url,
        }
    }
    endpoints = workflow_endpoints(config, ["spot", "um_futures", "cm_futures"], ["all"])
    assert [e.key for e in endpoints] == [
        "endpoints.listing, endpoints.archive, endpoints.cm_api",
        "endpoints.spot_api",
        "endpoints.um_api",
    ]
    failures = preflight(endpoints)
    lines = report(failures).splitlines()
    assert lines[0] == (
        f"cannot reach {closed_port_url} (config key endpoints.spot_api): connection refused"
    )
    assert lines[1].startswith(
        f"cannot reach {UNRESOLVABLE} (config key endpoints.um_api): name resolution failed"
    )
    assert len(lines) == 3 and "--verbose" in lines[2]
    assert "Traceback" not in report(failures)
    verbose = report(failures, verbose=True)
    assert "Traceback (most recent call last)" in verbose and "ConnectionError" in verbose


def test_archive_targets_do_not_need_the_rest_hosts():
    config = {"endpoints": {k: f"http://{k}" for k in
                            ("listing", "archive", "spot_api", "um_api", "cm_api")}}  # fmt: skip
    keys = [e.key for e in workflow_endpoints(config, ["spot"], ["aws_download"])]
    assert keys == ["endpoints.listing", "endpoints.archive"]
    keys = [e.key for e in workflow_endpoints(config, ["spot"], ["gen_kline"])]
    assert keys == ["endpoints.listing", "endpoints.archive", "endpoints.spot_api"]


SNAKEMAKE_LOG = """\
Building DAG of jobs...
[Fri Dec  4 05:51:16 2026]
localcheckpoint list_archive:
    output: /d/lakehouse/listing/spot/klines-1m.json
Error in rule list_archive:
    message: None
    jobid: 4
    output: /d/lakehouse/listing/spot/klines-1m.json
    log: {log} (check log file(s) for error details)
    shell:
        python3 scripts/list_archive.py '{{}}' {log}
        (command exited with non-zero exit code)
Error in rule gen_kline_symbol:
    message: None
    jobid: 9
    output: /d/lakehouse/reports/gen_kline/spot/klines-1m/BTCUSDT.json
    log: /nonexistent.log (check log file(s) for error details)
Exiting because a job execution failed. Look above for error messages
"""


def test_failure_report_lists_each_failed_job_with_its_last_error_line(tmp_path):
    job_log = tmp_path / "job.log"
    job_log.write_text(
        "2026-12-04 INFO crypto_lakehouse: run_listing(...)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "crypto_lakehouse.archive.sync.SyncError: spot BTCUSDT: 2 file(s) still missing:\n"
        "  data/a.zip: HTTP 503\n"
        "  data/b.zip: HTTP 503\n"
    )
    smk_log = tmp_path / "run.log"
    smk_log.write_text(SNAKEMAKE_LOG.format(log=job_log))
    jobs = failed_jobs(smk_log)
    assert [(j.rule, j.log) for j in jobs] == [
        ("list_archive", str(job_log)),
        ("gen_kline_symbol", "/nonexistent.log"),
    ]
    assert last_error_line(job_log).startswith("crypto_lakehouse.archive.sync.SyncError: spot")
    lines = failure_report(smk_log).splitlines()
    assert lines[0] == "crypto_lakehouse: 2 job(s) failed:"
    assert lines[1] == "  list_archive /d/lakehouse/listing/spot/klines-1m.json"
    # the message's first indented lines join it: it names what is missing
    assert lines[2].endswith(
        "SyncError: spot BTCUSDT: 2 file(s) still missing: data/a.zip: HTTP 503; data/b.zip: HTTP 503"
    )
    assert lines[5].strip() == "(no log at /nonexistent.log)"
    assert failure_report(tmp_path / "missing.log") == ""
    # The same, one line per job, for the report page a failed run writes.
    assert failure_lines(smk_log) == [
        "list_archive: crypto_lakehouse.archive.sync.SyncError: spot BTCUSDT: 2 file(s) still "
        f"missing: data/a.zip: HTTP 503; data/b.zip: HTTP 503 (log: {job_log})",
        "gen_kline_symbol: (no log at /nonexistent.log) (log: /nonexistent.log)",
    ]


def test_last_error_line_takes_two_continuation_lines_and_stays_short(tmp_path):
    log = tmp_path / "job.log"
    files = "".join(f"  data/{i}.zip: HTTP 500\n" for i in range(5))
    log.write_text(f"x.SyncError: 5 file(s) still missing:\n{files}INFO next run\n")
    assert last_error_line(log) == (
        "x.SyncError: 5 file(s) still missing: data/0.zip: HTTP 500; data/1.zip: HTTP 500"
    )
    long = "x.SyncError: " + "y" * 1000 + ":"
    log.write_text(f"{long}\n  data/0.zip: HTTP 500\n")
    assert last_error_line(log) == long  # whole, and nothing more
    log.write_text("x.SyncError: " + "y" * 460 + ":\n  data/0.zip: HTTP 500\n  data/" + "z" * 30)
    assert last_error_line(log).endswith("y: data/0.zip: HTTP 500")  # the second would pass 500
    # A continuation longer than the room left is shortened, not dropped: its start names
    # the file, which the exception line does not.
    many = "; ".join(f"data/spot/daily/klines/A{i}USDT-1m.zip: HTTP 500" for i in range(20))
    log.write_text(f"x.SyncError: 20 file(s) still missing after 5 retries:\n  {many}\n")
    line = last_error_line(log)
    assert len(line) == 500 and line.endswith("…"), line
    assert line.startswith(
        "x.SyncError: 20 file(s) still missing after 5 retries: data/spot/daily/klines/A0USDT-1m.zip: HTTP 500; "
    )
    log.write_text("x.ValueError: bad row 7:\nnot indented\n")  # not a continuation
    assert last_error_line(log) == "x.ValueError: bad row 7:"
    # the summary's and the shard's own exceptions are named ...Failed
    log.write_text("a.summary.SymbolsFailed: gen_kline spot: 1 symbol(s) failed\nINFO x\n")
    assert last_error_line(log) == "a.summary.SymbolsFailed: gen_kline spot: 1 symbol(s) failed"


def test_an_empty_log_on_a_full_disk_says_so(tmp_path, monkeypatch):
    import collections
    import shutil

    log = tmp_path / "job.log"
    log.write_text("")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(5 << 20, 5 << 20, 0))
    assert last_error_line(log) == "(empty log; the disk holding it is full: 0 bytes free)"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(5 << 30, 1 << 30, 4 << 30))
    assert last_error_line(log) == "(empty log)"


def test_a_log_cut_short_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """A download job on a full disk: the file-naming error of its last symbol could not be
    written to its log, which ends inside a traceback line; the line shown names no file."""
    import collections
    import shutil

    log = tmp_path / "job.log"
    log.write_text(
        "ERROR x: run_sync BNBUSDT failed\nTraceback (most recent call last):\n"
        "OSError: [Errno 28] No space left on device\n\nTraceback (most recent call last):\n"
        '  File "contextlib.py", line 158, in __exit__\n    self.gen.throw(typ, va'
    )
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(5 << 20, 5 << 20, 4096))
    assert last_error_line(log) == (
        "OSError: [Errno 28] No space left on device "
        "(the log is cut short; the disk holding it is full: 4096 bytes free)"
    )
    # With room on the disk the line is shown as it is (a log cut by a kill says nothing more).
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(5 << 30, 1 << 30, 4 << 30))
    assert last_error_line(log) == "OSError: [Errno 28] No space left on device"
    # A complete log on a full disk is not called cut short.
    log.write_text("OSError: [Errno 28] No space left on device: '/d/x.pqt'\n")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(5 << 20, 5 << 20, 0))
    assert last_error_line(log) == "OSError: [Errno 28] No space left on device: '/d/x.pqt'"


def _summary_failure(tmp_path, stage, message):
    log = tmp_path / f"{stage}.log"
    log.write_text(f"INFO run_summaries\ncrypto_lakehouse.summary.SymbolsFailed: {message}\n")
    return (
        f"Error in rule summarize:\n    message: None\n    jobid: 1\n"
        f"    output: /d/lakehouse/summaries/{stage}/spot.json\n"
        f"    log: {log} (check log file(s) for error details)\n"
    ), log


def test_the_summaries_held_back_by_a_failure_above_are_listed_on_one_line(tmp_path):
    # One failed download failed the summary of every later stage, each repeating its
    # error: 18 lines at the end of the run for one zip.
    error = "BTCUSDT: SyncError: spot klines-1m BTCUSDT: 1 file(s) still missing: HTTP 500"
    upstream = f"BTCUSDT: not done upstream (aws_download/spot/klines-1m/shards/0: failed): {error}"
    held = "1 symbol(s) held back by an earlier stage, retried by the next run"
    blocks = [_summary_failure(tmp_path, "aws_download", f"aws_download spot: 1 symbol(s) "
                               f"not done, retried by the next run: {error}")]  # fmt: skip
    for stage in ("aws_parse", "gen_kline"):
        both = f"{stage} spot: {held}: {upstream} | {stage} um_futures: {held}: {upstream}"
        blocks.append(_summary_failure(tmp_path, stage, both))
    smk_log = tmp_path / "run.log"
    smk_log.write_text("Building DAG of jobs...\n" + "".join(b for b, _ in blocks) + "Exiting\n")
    assert failure_report(smk_log).splitlines() == [
        "crypto_lakehouse: 3 job(s) failed:",
        "  summarize /d/lakehouse/summaries/aws_download/spot.json",
        "    crypto_lakehouse.summary.SymbolsFailed: aws_download spot: 1 symbol(s) not done, "
        f"retried by the next run: {error}",
        f"    log: {blocks[0][1]}",
        "  and the summaries of aws_parse, gen_kline: their symbols were held back by an "
        "earlier stage (above)",
    ]
    assert failure_lines(smk_log)[1:] == [
        "The summaries of aws_parse, gen_kline: their symbols were held back by an earlier "
        "stage (above)"
    ]
    # Nothing above to point to (the failure was in an earlier run): each in full.
    smk_log.write_text("".join(b for b, _ in blocks[1:]))
    lines = failure_report(smk_log).splitlines()
    assert lines[0] == "crypto_lakehouse: 2 job(s) failed:" and len(lines) == 7
    assert upstream in lines[2] and "gen_kline um_futures" in lines[5]


def test_a_job_failing_on_a_damaged_record_is_listed_with_the_file_not_the_json_error(tmp_path):
    # DamagedInput is raised from the JSONDecodeError: the failure list showed the latter's
    # "Unterminated string starting at: line 7", which names no file.
    job_log = tmp_path / "job.log"
    job_log.write_text(
        "Traceback (most recent call last):\n"
        "json.decoder.JSONDecodeError: Unterminated string starting at: line 7 column 11\n"
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        "crypto_lakehouse.shards.DamagedInput: /d/summaries/gen_kline/spot.json, written by "
        "the gen_kline summary job, is unreadable (JSONDecodeError: …): removed\n"
    )
    assert last_error_line(job_log).startswith(
        "crypto_lakehouse.shards.DamagedInput: /d/summaries/gen_kline/spot.json, written by"
    )


def test_a_job_killed_from_outside_is_listed_with_the_executors_message(tmp_path):
    # scancel of a SLURM job (or its time or memory limit): the job's log stops at an INFO
    # line, and the failure list showed that line as the job's error; the SLURM executor's
    # message says what happened.
    job_log = tmp_path / "job.log"
    job_log.write_text(
        "2026-12-06 15:48:43,128 INFO crypto_lakehouse: run_features_rule_shard(x)\n"
    )
    smk_log = tmp_path / "run.log"
    smk_log.write_text(
        "Error in rule features_shard:\n"
        "    message: SLURM-job '355' failed, SLURM status is: 'CANCELLED'. Detailed failure "
        "reason unavailable (status command is not 'sacct').For further error details see the "
        "cluster/cloud log and the log files of the involved rule(s).\n"
        "    jobid: 27\n"
        "    output: /d/lakehouse/reports/features/spot/klines-1m/shards/1.json\n"
        f"    log: {job_log}, /w/.snakemake/slurm_logs/355.log (check log file(s) for error details)\n"
        "Exiting because a job execution failed. Look above for error messages\n"
    )
    lines = failure_report(smk_log).splitlines()
    assert lines[2].strip() == (
        "SLURM-job '355' failed, SLURM status is: 'CANCELLED'. Detailed failure reason "
        "unavailable (status command is not 'sacct'). (the job's log ends: 2026-12-06 "
        "15:48:43,128 INFO crypto_lakehouse: run_features_rule_shard(x))"
    )
    assert failure_lines(smk_log)[0].startswith("features_shard: SLURM-job '355' failed, SLURM")
    # A log with an exception keeps its exception line: it says more than the status.
    job_log.write_text("INFO x\nValueError: bad row 7\n")
    assert failure_lines(smk_log)[0].startswith("features_shard: ValueError: bad row 7 (log: ")


def test_a_local_job_killed_by_a_signal_is_listed_as_killed(tmp_path):
    # kill -9 (or the out-of-memory killer) of a local job: its log stops at an INFO line or
    # is empty, and the failure list gave that line, or "(empty log)", as the job's error;
    # Snakemake's own line above the block says the job died with SIGKILL.
    job_log = tmp_path / "job.log"
    job_log.write_text(
        "2026-12-06 18:35:00,193 INFO crypto_lakehouse: run_resample_rule_shard(x)\n"
    )
    empty_log = tmp_path / "empty.log"
    empty_log.write_text("")
    smk_log = tmp_path / "run.log"
    smk_log.write_text(
        "RuleException:\n"
        'CalledProcessError in file "/w/rules/resample.smk", line 31:\n'
        f"Command 'set -euo pipefail;  python3 /w/scripts/resample_shard.py '{{\"a\": 1}}' {job_log}'"
        " died with <Signals.SIGKILL: 9>.\n"
        "[Sun Dec  6 18:35:00 2026]\n"
        "Error in rule resample_shard:\n"
        "    message: None\n"
        "    jobid: 8\n"
        "    output: /d/lakehouse/reports/resample/spot/klines-1m/shards/0.json\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
        "    shell:\n"
        "        python3 /w/scripts/resample_shard.py\n"
        "        (command exited with non-zero exit code)\n"
        "RuleException:\n"
        'CalledProcessError in file "/w/rules/aws_download.smk", line 29:\n'
        f"Command 'python3 /w/scripts/list_archive.py {empty_log}' died with <Signals.SIGTERM: 15>.\n"
        "[Sun Dec  6 18:35:01 2026]\n"
        "Error in rule list_archive:\n"
        "    message: None\n"
        "    jobid: 2\n"
        "    output: /d/lakehouse/listing/spot/klines-1m.json\n"
        f"    log: {empty_log} (check log file(s) for error details)\n"
        "RuleException:\n"
        'CalledProcessError in file "/w/rules/gen_kline.smk", line 40:\n'
        "Command 'python3 /w/scripts/gen_kline_shard.py' returned non-zero exit status 1.\n"
        "[Sun Dec  6 18:35:02 2026]\n"
        "Error in rule gen_kline_shard:\n"
        "    message: None\n"
        "    jobid: 5\n"
        "    output: /d/lakehouse/reports/gen_kline/spot/klines-1m/shards/0.json\n"
        f"    log: {empty_log} (check log file(s) for error details)\n"
        "Exiting because a job execution failed. Look above for error messages\n"
    )
    lines = failure_report(smk_log).splitlines()
    assert lines[2].strip() == (
        "the job was killed (kill -9, or the out-of-memory killer) (SIGKILL) (the job's log "
        "ends: 2026-12-06 18:35:00,193 INFO crypto_lakehouse: run_resample_rule_shard(x))"
    )
    assert lines[5].strip() == "the job was terminated (SIGTERM) (empty log)"
    # A job that exited by itself is not taken for the one killed above it.
    assert lines[8].strip() == "(empty log)"
    assert failure_lines(smk_log)[0].startswith("resample_shard: the job was killed (kill -9")
