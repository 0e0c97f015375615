"""Durable local writes (crypto_lakehouse.io, config storage.fsync): the file's content is
fsynced before the rename, the folder after it, and all of it before the write returns (so
before any marker or record written next); nothing is fsynced when the switch is off."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pyarrow as pa
import pytest

from crypto_lakehouse import io, storage
from crypto_lakehouse.smk import apply_storage_settings


@pytest.fixture
def events(monkeypatch):
    """Record fsync (of a file: its path; of a folder: 'dir:' + path) and rename calls."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", path))
        real_fsync(fd)

    def replace(src, dst):
        seen.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    yield seen
    io.configure(fsync=True)


def _check_order(seen, target):
    """fsync of the temp file, rename onto target, fsync of target's folder: in that order."""
    kinds = [k for k, _ in seen]
    assert kinds == ["fsync-file", "rename", "fsync-dir"], seen
    assert os.path.basename(seen[0][1]).startswith(".tmp-" + target.name)
    assert seen[1][1] == str(target)
    assert seen[2][1] == str(target.parent)


def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_folder(tmp_path, events):
    target = tmp_path / "a" / "x.zip"
    io.write_bytes(target, b"zip body")
    _check_order(events, target)
    assert target.read_bytes() == b"zip body"


def test_parquet_written_through_the_temp_path_is_fsynced_before_the_rename(tmp_path, events):
    target = tmp_path / "202401.pqt"
    io.write_parquet(target, pa.table({"a": [1, 2, 3]}))
    _check_order(events, target)


def test_streamed_temp_file_commit_is_durable(tmp_path, events):
    target = tmp_path / "d" / "day.pqt"
    tmp = io.new_temp_path(target)
    tmp.write_bytes(b"streamed")
    io.commit_temp(tmp, target)
    _check_order(events, target)
    assert target.read_bytes() == b"streamed"


def test_marker_comes_after_the_durable_data_file(tmp_path, events):
    """The download's order: zip committed (fsynced) first, marker created after."""
    zip_path = tmp_path / "k.zip"
    marker = tmp_path / "k.zip.verified"
    real_open = os.open

    def watched_open(path, flags, *args):
        if str(path) == str(marker):
            events.append(("marker", str(path)))
        return real_open(path, flags, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", watched_open)
        with io.atomic_file(zip_path) as (fd, _tmp):
            io.write_all(fd, b"PK")
        io.touch(marker)
    assert [k for k, _ in events] == ["fsync-file", "rename", "fsync-dir", "marker"]


def test_fsync_off_renames_without_any_fsync(tmp_path, events):
    io.configure(fsync=False)
    io.write_json(tmp_path / "state.json", {"a": 1})
    tmp = io.new_temp_path(tmp_path / "b.pqt")
    io.commit_temp(tmp, tmp_path / "b.pqt")
    assert [k for k, _ in events] == ["rename", "rename"]


def test_job_storage_settings_switch_fsync_and_leave_the_arguments(events):
    kwargs = {"data_dir": "/x", "storage": {"fsync": False}}
    apply_storage_settings(kwargs)
    assert kwargs == {"data_dir": "/x"} and not io.fsync_enabled()
    apply_storage_settings(kwargs)  # no storage key: the defaults (fsync on)
    assert io.fsync_enabled()


def test_only_non_default_settings_reach_the_jobs():
    assert storage.job_settings({"fsync": True, "endpoint_url": None}) == {}
    assert storage.job_settings({"fsync": False, "addressing_style": "virtual"}) == {"fsync": False}
    with pytest.raises(ValueError, match="endpoint"):
        storage.job_settings({"endpointurl": "http://x"})


def test_a_job_with_fsync_off_in_its_json_never_fsyncs(tmp_path):
    """End to end through a script's entry (run_job), in a fresh process."""
    code = (
        "import os, sys, json\n"
        "calls = []\n"
        "real = os.fsync\n"
        "os.fsync = lambda fd: (calls.append(fd), real(fd))\n"
        "from crypto_lakehouse import io\n"
        "from crypto_lakehouse.smk import run_job\n"
        "def job(*, target):\n"
        "    io.write_text(target, 'x')\n"
        "    return len(calls)\n"
        "n = run_job(job, ['s', sys.argv[1], sys.argv[2]])\n"
        "print(n)\n"
    )
    out = {}
    for fsync in (True, False):
        job = {"target": str(tmp_path / f"t{fsync}.txt")}
        if not fsync:
            job["storage"] = {"fsync": False}
        res = subprocess.run(
            [sys.executable, "-c", code, json.dumps(job), str(tmp_path / "log")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        out[fsync] = int(res.stdout.strip().splitlines()[-1])
    assert out == {True: 2, False: 0}


def test_schema_defaults_of_the_storage_block_are_the_modules():
    """The schema fills the defaults; job_settings drops exactly those (no job reruns)."""
    import jsonschema
    import yaml

    from crypto_lakehouse.configuration import check_user_config
    from crypto_lakehouse.plan import ConfigError
    from tests.conftest import REPO_ROOT

    schema_path = REPO_ROOT / "config" / "config.schema.yaml"
    block = yaml.safe_load(schema_path.read_text())["properties"]["storage"]["properties"]
    assert {k: v["default"] for k, v in block.items()} == storage.DEFAULTS
    with pytest.raises(ConfigError, match="storage.fsync"):
        check_user_config({"storage": {"fsync": "no"}}, schema_path)
    with pytest.raises(ConfigError, match="storage"):
        check_user_config({"storage": {"endpoint": "http://x"}}, schema_path)
    jsonschema.validate(
        {"storage": {"addressing_style": "path"}}, yaml.safe_load(schema_path.read_text())
    )
