"""A data dir wiped (or replaced by an empty one) under an intact run dir (config
``run_dir`` elsewhere, or the local run dir of an S3 data dir). Snakemake's outputs are the
run dir's reports, so before, the next run said "Nothing to be done" and left a lakehouse
without data. The data dir's identity marker (crypto_lakehouse/data_identity.py) makes it
rebuild; an existing data dir without a marker (an upgrade) is adopted, not rebuilt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import snakemake
from tests.s3_helpers import weed_binary

pytestmark = pytest.mark.e2e


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _built_with_the_run_dir_elsewhere(tmp_path, emu):
    """A complete run of the scenario, config ``run_dir`` outside the data dir: the data
    dir, the run dir and the config."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    config = h.config_for(emu.base_url, data)
    config["run_dir"] = str(run_dir)
    snakemake(tmp_path, config, "all")
    return data, run_dir, config


def test_a_wiped_data_dir_is_rebuilt_and_an_upgrade_is_not(tmp_path):
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data, run_dir, config = _built_with_the_run_dir_elsewhere(tmp_path, emu)
        results = sorted(p.relative_to(data) for p in data.glob("results_data/**/*.pqt"))
        assert results
        before = h.snapshot(data)

        # An upgrade: a data dir and run dir of a run made before the marker existed.
        marker = layout.data_identity_path(data)
        record = Path(layout.run_identity_path(str(run_dir)))
        marker.unlink()
        record.unlink()
        upgrade = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in upgrade.stdout + upgrade.stderr
        assert json.loads(marker.read_text())["id"] == json.loads(record.read_text())["id"]

        # A dry run on a wiped data dir says so and writes nothing.
        shutil.rmtree(data)
        kept = {p: p.read_bytes() for p in _files(run_dir) if "/logs/" not in str(p)}
        dry = snakemake(tmp_path, config, "all", "-n")
        assert "no marker" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
        assert not data.exists()
        assert {p: p.read_bytes() for p in kept if p.exists()} == kept

        rebuilt = snakemake(tmp_path, config, "all")
        out = rebuilt.stdout + rebuilt.stderr
        assert "Nothing to be done" not in out
        assert sorted(p.relative_to(data) for p in data.glob("results_data/**/*.pqt")) == results
        after = h.snapshot(data)
        assert h.differences(before, after) == [], out[-3000:]
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr
    finally:
        emu.stop()


def test_a_data_dir_wiped_before_its_first_run_with_this_version_is_rebuilt(tmp_path):
    """Neither an identity record nor a record of the data folders (a run dir of an older
    version) and the data dir wiped: the run dir's summaries count files no folder holds
    (crypto_lakehouse/data_presence.py). Before, "Nothing to be done" (a documented gap)."""
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data, run_dir, config = _built_with_the_run_dir_elsewhere(tmp_path, emu)
        before = h.snapshot(data)
        for record in (layout.run_identity_path(str(run_dir)),
                       layout.data_folders_record_path(str(run_dir))):  # fmt: skip
            Path(record).unlink(missing_ok=True)
        shutil.rmtree(data)

        rebuilt = snakemake(tmp_path, config, "all")
        out = rebuilt.stdout + rebuilt.stderr
        assert "Nothing to be done" not in out and "deleted by hand?" in out, out[-3000:]
        assert h.differences(before, h.snapshot(data)) == [], out[-3000:]
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr
    finally:
        emu.stop()


def _bucket_snapshot(seaweed, data_dir: str, into: Path) -> dict:
    """The chaos suite's snapshot of every object below ``data_dir`` (its own client)."""
    import pyarrow.fs as pafs

    fs = seaweed.client()
    base = data_dir.removeprefix("s3://").rstrip("/")
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            target = into / info.path[len(base) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    return h.snapshot(into) if into.exists() else {}


@pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")
def test_a_wiped_bucket_prefix_is_rebuilt(tmp_path, seaweed, s3_root):
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        config = {**h.config_for(emu.base_url, s3_root), "storage": seaweed.storage_settings}
        env = {**h.env(), **seaweed.env}
        (tmp_path / "config.json").write_text(json.dumps(config))

        def run():
            cmd = h.snakemake_cmd(tmp_path, tmp_path / "config.json")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
            return proc.stdout + proc.stderr

        run()
        before = _bucket_snapshot(seaweed, s3_root, tmp_path / "before")
        assert any(k.startswith("results_data/") for k in before)
        seaweed.client().delete_dir_contents(s3_root.removeprefix("s3://"))
        assert _bucket_snapshot(seaweed, s3_root, tmp_path / "wiped") == {}

        out = run()
        assert "has no marker" in out and "Nothing to be done" not in out, out[-3000:]
        after = _bucket_snapshot(seaweed, s3_root, tmp_path / "after")
        assert h.differences(before, after) == [], out[-3000:]
        assert "Nothing to be done" in run()
    finally:
        emu.stop()


def test_folders_deleted_by_hand_are_rebuilt_and_nothing_else(tmp_path):
    """Part of a data dir deleted by hand under the default run dir (``{data_dir}/lakehouse``,
    kept): before, the reports made the next run say "Nothing to be done" and the
    lakehouse stayed without those files (crypto_lakehouse/data_presence.py)."""
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data = tmp_path / "data"
        config = h.config_for(emu.base_url, data)
        config["resample"] = {
            "targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "30m"}]
        }
        snakemake(tmp_path, config, "all")
        before = h.snapshot(data)
        assert any(n.startswith("results_data/spot/resampled_klines/1h/30m/") for n in before)

        shutil.rmtree(data / "parsed_data" / "spot")
        shutil.rmtree(data / "results_data" / "spot" / "resampled_klines")
        dry = snakemake(tmp_path, config, "all", "-n")
        assert "a real run reruns aws_parse spot/klines-1m, resample spot/klines-1m" in dry.stderr

        rebuilt = snakemake(tmp_path, config, "all")
        out = rebuilt.stdout + rebuilt.stderr
        notices = [line for line in out.splitlines() if "deleted by hand?" in line]
        assert len(notices) == 1, out[-3000:]
        assert "parsed_data/spot/klines" in notices[0]
        assert "results_data/spot/resampled_klines/1h" in notices[0]
        # The download jobs, whose archives are all there, do not run again.
        assert "rule aws_download_shard" not in out and "rule list_archive" not in out
        assert "rule aws_parse_klines" in out and "rule resample_shard" in out
        assert h.differences(before, h.snapshot(data)) == [], out[-3000:]
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr
    finally:
        emu.stop()


def test_a_symbols_files_deleted_by_hand_are_named_by_verify_and_rebuilt(tmp_path):
    """A symbol's files deleted inside folders that are still there are not looked for at
    every start (a check per symbol and stage); `verify` names them from the symbols'
    records (its quality and provenance records too), and its repair command rebuilds
    them."""
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data = tmp_path / "data"
        config = h.config_for(emu.base_url, data)
        snakemake(tmp_path, config, "all")
        before = h.snapshot(data)
        generated = data / "results_data/spot/klines/1m/ETHUSDT.pqt"
        features = data / "results_data/spot/features/1m/ETHUSDT.pqt"
        generated.unlink()
        features.unlink()
        shutil.rmtree(data / "parsed_data/spot/klines/SOLUSDT")
        # The Parquet records below lakehouse/ (their folders stay): named since 2026-12-07.
        (data / "lakehouse/quality/spot/1m/BTCUSDT.pqt").unlink()
        (data / "lakehouse/provenance/spot/1m/ETHUSDT.pqt").unlink()
        plain = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in plain.stdout + plain.stderr

        verdict = subprocess.run(
            [sys.executable, "-m", "crypto_lakehouse", "verify", str(data)],
            capture_output=True, text=True, env=h.env(),
        )  # fmt: skip
        assert verdict.returncode == 1, verdict.stdout + verdict.stderr
        missing = [line.split(":")[0].strip() for line in verdict.stdout.splitlines()
                   if line.startswith("  ")]  # fmt: skip
        assert sorted(missing) == [
            "lakehouse/provenance/spot/1m/ETHUSDT.pqt",
            "lakehouse/quality/spot/1m/BTCUSDT.pqt",
            "parsed_data/spot/klines/SOLUSDT/1m/202402.pqt",
            "parsed_data/spot/klines/SOLUSDT/1m/202403.pqt",
            "results_data/spot/features/1m/ETHUSDT.pqt",
            "results_data/spot/klines/1m/ETHUSDT.pqt",
        ], verdict.stdout
        assert "--forcerun aws_download_shard" in verdict.stdout

        # BTCUSDT lost its quality record only: its data files are not written again.
        layers = ("aws_data", "parsed_data", "api_data", "results_data")
        btc = {p: p.stat().st_mtime_ns for layer in layers for p in (data / layer).rglob("*")
               if p.is_file() and "BTCUSDT" in str(p.relative_to(data))}  # fmt: skip
        snakemake(tmp_path, config, "all", "--forcerun", "aws_download_shard")
        assert h.differences(before, h.snapshot(data)) == []
        assert any("parsed_data" in str(p) for p in btc)
        assert {p: p.stat().st_mtime_ns for p in btc} == btc
        clean = subprocess.run(
            [sys.executable, "-m", "crypto_lakehouse", "verify", str(data)],
            capture_output=True, text=True, env=h.env(),
        )  # fmt: skip
        assert clean.returncode == 0, clean.stdout
    finally:
        emu.stop()
