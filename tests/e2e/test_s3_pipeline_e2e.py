"""The whole workflow with ``data_dir: s3://…`` on SeaweedFS (issue 18).

The chaos suite's small scenario (spot, three symbols, nine days of 1m archives plus a
REST fill from the emulator) runs once on a local data dir and once on a bucket: the bucket
then holds the same tables and records as the local data dir, and the local run directory
the same reports. The objects are fetched with a pyarrow client of its own (not through
``crypto_lakehouse.storage``) and compared with the chaos suite's snapshot (Parquet by table
content, the rest by bytes). Then: a run on the bucket killed with kill -9 and started
again with the same command gives the same outputs; the results are read straight from
the bucket with pyarrow and with DuckDB; a second run on the same bucket from another run
directory is refused while the first one's lease is live.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h

pytestmark = [pytest.mark.e2e]

# Only the run directory's own bookkeeping differs between a run on a bucket and a local one:
# the local data dir's lakehouse/ folder holds both records and run files, and the run lock.
RUN_DIR_ONLY = ("jobs.lock", "run.lock")


def _env(seaweed) -> dict:
    return {**h.env(), **seaweed.env}


def _run(workdir: Path, config_path: Path, env: dict, *args: str, timeout=600):
    return subprocess.run(
        h.snakemake_cmd(workdir, config_path, *args),
        capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env,
    )  # fmt: skip


def _start(workdir: Path, config_path: Path, env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed by the OS
    return subprocess.Popen(
        h.snakemake_cmd(workdir, config_path),
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env, start_new_session=True,
    )  # fmt: skip


def _s3_config(base_url: str, data_dir: str, seaweed, **extra) -> dict:
    return {**h.config_for(base_url, data_dir), "storage": seaweed.storage_settings, **extra}


def _fetch_bucket(seaweed, data_dir: str, into: Path) -> list[str]:
    """Every object below ``data_dir`` copied into ``into`` (same relative paths)."""
    fs = seaweed.client()
    base = data_dir.removeprefix("s3://").rstrip("/")
    keys = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1 :]
        keys.append(rel)
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src:
            target.write_bytes(src.read())
    return sorted(keys)


def _assemble(seaweed, data_dir: str, run_dir: Path, into: Path) -> Path:
    """The bucket's objects plus the run directory (as ``lakehouse/``): the layout a local
    data dir has, to compare with the chaos suite's snapshot."""
    _fetch_bucket(seaweed, data_dir, into)
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.as_posix() not in RUN_DIR_ONLY:
            target = into / "lakehouse" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return into


def _local_snapshot(data: Path) -> dict:
    return {
        k: v
        for k, v in h.snapshot(data).items()
        if k.removeprefix("lakehouse/") not in RUN_DIR_ONLY
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The scenario's mirror, its emulator, and the snapshot of a local run of it."""
    root = tmp_path_factory.mktemp("s3_scenario")
    mirror = h.build_scenario(root)
    emu = h.start_emulator(mirror)
    try:
        config = root / "config.json"
        config.write_text(json.dumps(h.config_for(emu.base_url, root / "data")))
        proc = h.run(root, config)
        assert proc.returncode == 0, proc.stderr[-4000:]
        yield emu, _local_snapshot(root / "data"), root / "data"
    finally:
        emu.stop()


def test_pipeline_on_a_bucket_equals_the_local_run(tmp_path, scenario, seaweed, s3_root):
    emu, expected, local_data = scenario
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed)))
    proc = _run(tmp_path, config, _env(seaweed))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run_dir = tmp_path / layout.default_run_dir(s3_root)
    assert (run_dir / "report" / "index.html").is_file()
    # Nothing of the run landed below the working directory but the run dir and .snakemake.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".snakemake", "config.json", layout.S3_RUN_DIRS,
    ]  # fmt: skip
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []  # the lease is gone after the run
    assert h.differences(expected, got) == []

    # A plain rerun on the bucket has nothing to do.
    again = _run(tmp_path, config, _env(seaweed), "-n")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr

    # `crypto_lakehouse plan` on the same config: the run's listing and summaries (in the run
    # dir) are used, every archive of the scenario (3 symbols x 9 days) is in the bucket.
    planned = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "plan", "--configfile", str(config),
         "--directory", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env(seaweed),
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (klines_plan,) = json.loads(planned.stdout)["datasets"]
    assert klines_plan["listing"].startswith("reused the last run's listing")
    # Download rates from the run's aws_download summary (run dir), not the defaults.
    assert klines_plan["rates"]["download_source"] == "the last aws_download run summary"
    assert (klines_plan["files_present"], klines_plan["files_to_download"]) == (
        len(h.SYMBOLS) * len(h.DAYS),
        0,
    )

    # Reading the results straight from the bucket, without crypto_lakehouse.
    fs = seaweed.client()
    klines = s3_root.removeprefix("s3://") + "/results_data/spot/klines/1m"
    on_bucket = ds.dataset(klines, filesystem=fs, format="parquet")
    local_dir = local_data / "results_data/spot/klines/1m"
    assert sorted(Path(f).name for f in on_bucket.files) == sorted(
        p.name for p in local_dir.iterdir()
    )
    assert sorted(Path(f).name for f in on_bucket.files) == [f"{s}.pqt" for s in h.SYMBOLS]
    local = pq.read_table(local_dir)
    assert on_bucket.to_table().num_rows == local.num_rows > 0
    btc = pq.read_table(f"{klines}/BTCUSDT.pqt", filesystem=fs)
    assert btc.equals(pq.read_table(local_dir / "BTCUSDT.pqt"))
    _duckdb_reads_the_bucket(fs, klines, local)


def _duckdb_reads_the_bucket(fs, klines: str, local) -> None:
    """DuckDB scans a pyarrow dataset on the bucket (its httpfs extension would have to be
    downloaded): row count, first and last candle and the volume sum of the local files."""
    import duckdb

    con = duckdb.connect()
    con.register("klines", ds.dataset(klines, filesystem=fs, format="parquet"))
    count, first, last, volume = con.execute(
        "SELECT count(*), min(candle_begin_time), max(candle_begin_time), sum(volume) FROM klines"
    ).fetchall()[0]
    times = pc.min_max(local.column("candle_begin_time"))
    assert count == local.num_rows
    assert (first, last) == (times["min"].as_py(), times["max"].as_py())
    assert volume == pytest.approx(pc.sum(local.column("volume")).as_py(), rel=1e-12)


def _reports(run_dir: Path) -> int:
    folder = run_dir / "reports"
    return len(list(folder.rglob("*.json"))) if folder.is_dir() else 0


def test_pipeline_with_the_endpoint_only_in_aws_endpoint_url_s3(
    tmp_path, scenario, seaweed, s3_root
):
    """No ``storage`` block in the config: the endpoint comes from the AWS SDKs' variable, in
    the main process (the lease) and in every job (docs/storage.md). Before, the requests
    went to amazonaws.com and the run stopped at its start."""
    emu, expected, _local_data = scenario
    config = tmp_path / "config.json"
    config.write_text(json.dumps(h.config_for(emu.base_url, s3_root)))
    env = {**_env(seaweed), "AWS_ENDPOINT_URL_S3": seaweed.endpoint_url}
    env.pop("AWS_ENDPOINT_URL", None)
    proc = _run(tmp_path, config, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run_dir = tmp_path / layout.default_run_dir(s3_root)
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []


def test_cpu_jobs_on_nodes_without_the_run_directory_equal_the_local_run(
    tmp_path, scenario, seaweed, s3_root
):
    """``cluster.launcher: srun`` with a stand-in srun (tests/remote/fake_srun.py) whose node
    processes cannot touch the run directory or the working directory: every CPU job goes
    through it, and the bucket and run directory end up as after a local run."""
    emu, expected, _ = scenario
    work = tmp_path / "submit"
    work.mkdir()
    fake_srun = [sys.executable, str(Path(__file__).resolve().parents[1] / "remote/fake_srun.py")]
    config = work / "config.json"
    cluster = {"launcher": "srun", "srun": fake_srun, "srun_args": ["--partition=test"]}
    config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed, cluster=cluster)))
    calls = tmp_path / "srun_calls.jsonl"
    env = {**_env(seaweed), "FAKE_SRUN_CALLS": str(calls)}
    proc = _run(work, config, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    launched = [json.loads(line)["options"] for line in calls.read_text().splitlines()]
    names = sorted(o.removeprefix("--job-name=crypto_lakehouse-") for opts in launched
                   for o in opts if o.startswith("--job-name="))  # fmt: skip
    assert names == ["aws_parse_klines", "features_shard", "gen_kline_shard", "resample_shard"]
    assert all(opts[-1] == "--partition=test" for opts in launched)
    # Each job works on its three symbols at once on the bucket (storage.symbols_at_once
    # 4): the memory asked of SLURM grows by 1000 MB per symbol beyond the first; the
    # klines parse asks 1000 MB per symbol at once (sizing.parse_klines_mem_mb).
    for opts in launched:
        parse = "--job-name=crypto_lakehouse-aws_parse_klines" in opts
        assert ("--mem=3000M" if parse else "--mem=4000M") in opts, launched
    run_dir = work / layout.default_run_dir(s3_root)
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []
    # The launched jobs' logs came back from the nodes (not the launcher's placeholder).
    log = run_dir / "logs/gen_kline/spot/klines-1m/shards/0.log"
    assert "run_gen_kline_rule" in log.read_text()


def test_kill_9_on_a_bucket_then_a_plain_rerun(tmp_path, scenario, seaweed, s3_root):
    """kill -9 of the whole run mid-way (its lease and Snakemake's locks stay behind), a
    second run from another machine's run dir refused while the first lives, then the same
    command again: the outputs of an undisturbed local run."""
    emu, expected, _ = scenario
    env = _env(seaweed)
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed)))
    run_dir = first / layout.default_run_dir(s3_root)
    proc = _start(first, config, env, tmp_path / "first.log")
    try:
        assert h.wait_for(lambda: _reports(run_dir) >= 6 or proc.poll() is not None, 300)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        refused = _run(other, config, env)
        h.kill_group(proc)
    finally:
        h.kill_group(proc)
    assert refused.returncode != 0
    assert f"is in use by another run: PID {proc.pid}" in refused.stdout + refused.stderr
    assert not (other / layout.default_run_dir(s3_root) / "reports").exists()
    lease = json.loads(seaweed.client().open_input_stream(
        str(layout.data_lease_path(s3_root)).removeprefix("s3://")).read())  # fmt: skip
    assert lease["pid"] == proc.pid  # left behind by the kill

    rerun = _run(first, config, env)  # the same command: no --unlock, no flags
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-6000:]
    assert "taking over the stale lease" in rerun.stdout + rerun.stderr
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []
    assert h.temp_files(run_dir) == []


def _launched_job_in_flight(run_dir: Path) -> bool:
    """A launcher's placeholder log: a job is on its (fake) node right now."""
    logs = run_dir / "logs"
    return logs.is_dir() and any(
        p.read_text(errors="replace").startswith("crypto_lakehouse.remote: running on a node")
        for p in logs.rglob("*.log")
    )


def test_kill_9_while_jobs_are_on_nodes_then_a_plain_rerun(tmp_path, scenario, seaweed, s3_root):
    """cluster.launcher srun: kill -9 of the run (Snakemake, launchers and fake nodes) while a
    job is on a node, then the same command again: the outputs of an undisturbed local run,
    no temporary file left in the run directory."""
    emu, expected, _ = scenario
    work = tmp_path / "submit"
    work.mkdir()
    fake_srun = [sys.executable, str(Path(__file__).resolve().parents[1] / "remote/fake_srun.py")]
    config = work / "config.json"
    cluster = {"launcher": "srun", "srun": fake_srun}
    config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed, cluster=cluster)))
    env = _env(seaweed)
    run_dir = work / layout.default_run_dir(s3_root)
    proc = _start(work, config, env, tmp_path / "first.log")
    try:
        in_flight = h.wait_for(lambda: _launched_job_in_flight(run_dir) or proc.poll() is not None,
                               300, step=0.01)  # fmt: skip
        assert in_flight and proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        h.kill_group(proc)
    rerun = _run(work, config, env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-6000:]
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []
    assert h.temp_files(run_dir) == []
