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
    assert storage.job_settings({"fsync": False, "addressing_style": None}) == {"fsync": False}
    # An explicit virtual is not the default (null: by endpoint): the jobs must get it.
    assert storage.job_settings({"addressing_style": "virtual"}) == {"addressing_style": "virtual"}
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
    with pytest.raises(ConfigError, match="storage.symbols_at_once"):
        check_user_config({"storage": {"symbols_at_once": 0}}, schema_path)
    jsonschema.validate(
        {"storage": {"addressing_style": "path"}}, yaml.safe_load(schema_path.read_text())
    )


# ---- io.deferred_dir_syncs: a job's commit group (gen_kline and resample shard jobs)


def _kinds_with_names(seen, root):
    """Events as (kind, path relative to root) for readable assertions."""
    out = []
    for kind, path in seen:
        rel = os.path.relpath(path, root)
        if kind == "fsync-file":  # the temp file: name its target
            rel = os.path.join(os.path.dirname(rel), io.temp_target(os.path.basename(rel)))
        out.append((kind, rel))
    return out


def test_group_syncs_data_folders_once_before_the_next_record(tmp_path, events):
    """Each data file: fsync, rename (no folder fsync yet); before the record: each data
    folder once; the record's folder only when the group ends."""
    (tmp_path / "a").mkdir()
    with io.deferred_dir_syncs():
        io.write_bytes(tmp_path / "a" / "1.pqt", b"1")
        io.write_bytes(tmp_path / "b" / "2.pqt", b"2")
        io.write_bytes(tmp_path / "a" / "3.pqt", b"3")
        io.write_json(tmp_path / "rep" / "report.json", {"ok": 1})
        io.write_json(tmp_path / "rep" / "stats.json", {"ok": 2})
        mid = len(events)
    got = _kinds_with_names(events, tmp_path)
    assert got == [
        ("fsync-file", "a/1.pqt"),
        ("rename", "a/1.pqt"),
        ("fsync-file", "b/2.pqt"),
        ("rename", "b/2.pqt"),
        ("fsync-file", "a/3.pqt"),
        ("rename", "a/3.pqt"),
        ("fsync-dir", "a"),  # the barrier of the first record: each data folder once
        ("fsync-dir", "b"),
        ("fsync-file", "rep/report.json"),
        ("rename", "rep/report.json"),
        ("fsync-file", "rep/stats.json"),  # records are not ordered among themselves
        ("rename", "rep/stats.json"),
        ("fsync-dir", "rep"),  # the group's end: the records' folder once
    ], got
    assert mid == len(events) - 1
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == {"ok": 1}


def test_every_rename_is_durable_before_a_record_or_marker_written_after_it(tmp_path, events):
    """The contract of storage.md, for any interleaving: when a record (JSON) or a marker is
    written, every data file renamed before it has had its folder fsynced since its rename."""
    real_open = os.open

    def watched_open(path, flags, *args):
        if str(path).endswith(".verified"):
            events.append(("marker", str(path)))
        return real_open(path, flags, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", watched_open)
        with io.deferred_dir_syncs():
            for i in range(3):
                io.write_bytes(tmp_path / f"d{i % 2}" / f"{i}.zip", b"z")
                io.write_parquet(tmp_path / "p" / f"{i}.pqt", pa.table({"a": [i]}))
                storage.write_json(tmp_path / "state" / f"{i}.json", {"i": i})
                io.write_bytes(tmp_path / "d2" / f"{i}.zip", b"z")
                io.touch(tmp_path / "d2" / f"{i}.zip.verified")
                io.write_json_if_changed(tmp_path / "rep" / f"{i}.json", {"i": i})
    assert _assert_records_after_durable_renames(events) == 9
    # Every folder written to was fsynced by the group's end, after its last rename.
    last_rename = {os.path.dirname(p): i for i, (k, p) in enumerate(events) if k == "rename"}
    last_sync = {p: i for i, (k, p) in enumerate(events) if k == "fsync-dir"}
    assert set(last_rename) == set(last_sync)
    assert all(last_sync[d] > i for d, i in last_rename.items())


def test_group_syncs_pending_folders_when_the_job_raises(tmp_path, events):
    with pytest.raises(RuntimeError, match="boom"), io.deferred_dir_syncs():
        io.write_bytes(tmp_path / "x" / "1.pqt", b"1")
        io.write_json(tmp_path / "r.json", {})
        raise RuntimeError("boom")
    dirs = [p for k, p in events if k == "fsync-dir"]
    assert dirs == [str(tmp_path / "x"), str(tmp_path)]
    # Outside the group: the folder is fsynced at each commit again.
    events.clear()
    io.write_bytes(tmp_path / "y.pqt", b"y")
    assert [k for k, _ in events] == ["fsync-file", "rename", "fsync-dir"]


def test_group_with_fsync_off_never_fsyncs(tmp_path, events):
    io.configure(fsync=False)
    with io.deferred_dir_syncs():
        io.write_bytes(tmp_path / "x" / "1.pqt", b"1")
        io.write_json(tmp_path / "r.json", {})
    assert [k for k, _ in events] == ["rename", "rename"]


def test_nested_groups_are_one(tmp_path, events):
    with io.deferred_dir_syncs():
        with io.deferred_dir_syncs():
            io.write_bytes(tmp_path / "x" / "1.pqt", b"1")
        assert [k for k, _ in events] == ["fsync-file", "rename"]  # the inner end syncs nothing
    assert [k for k, _ in events] == ["fsync-file", "rename", "fsync-dir"]


def _assert_records_after_durable_renames(events) -> int:
    """When each record (a JSON file: its temp file's fsync) or marker is written, every data
    file renamed before it has had its folder fsynced since; returns how many were written."""
    not_durable: set[str] = set()  # folders with a data rename not yet fsynced
    records = 0
    for kind, path in events:
        if kind == "rename" and not path.endswith(".json"):
            not_durable.add(os.path.dirname(path))
        elif kind == "fsync-dir":
            not_durable.discard(path)
        elif kind == "marker" or (
            kind == "fsync-file"
            and (io.temp_target(os.path.basename(path)) or "").endswith(".json")
        ):
            records += 1
            assert not not_durable, (kind, path, not_durable)
    return records


def test_gen_kline_and_resample_in_a_group_same_files_records_after_their_data(
    tmp_path, events, monkeypatch
):
    """Full and tail builds of gen_kline and resample (what their shard jobs run in a
    group): the same bytes as without the group, and no record before its data is durable."""
    from tests.unit import test_generate_tail as gt
    from tests.unit.test_job_without_pandas import _gen_and_resample

    monkeypatch.setattr(gt.parquet_append, "ROW_GROUP_ROWS", 5000)
    _gen_and_resample(tmp_path / "plain")
    events.clear()
    with io.deferred_dir_syncs():
        _gen_and_resample(tmp_path / "group")
    assert _assert_records_after_durable_renames(events) >= 8
    n_dir_syncs = len([k for k, _ in events if k == "fsync-dir"])
    plain, group = gt.outputs(tmp_path / "plain"), gt.outputs(tmp_path / "group")
    assert plain.keys() == group.keys() and len(plain) > 3
    assert all(plain[name] == group[name] for name in plain)
    for report in ("report.json", "resample.json"):
        a = json.loads((tmp_path / "plain/rep" / report).read_text())
        b = json.loads((tmp_path / "group/rep" / report).read_text())
        assert a == b
    assert n_dir_syncs < len([k for k, _ in events if k == "fsync-file"])


def test_shard_scripts_run_their_jobs_in_one_commit_group(tmp_path):
    """scripts/gen_kline_shard.py and resample_shard.py: the entry point runs inside the
    group (checked on the function run_job receives, in a fresh interpreter)."""
    code = (
        "import runpy, sys\n"
        "from crypto_lakehouse import io, smk\n"
        "def fake_run_job(func, **kw):\n"
        "    import crypto_lakehouse.shards as shards\n"
        "    shards.run_shard = lambda f, **k: print('group', io._GROUP is not None)\n"
        "    func(symbols=[], shard_report='x', symbol_paths={'report_path': 'r'})\n"
        "    print('after', io._GROUP is not None)\n"
        "smk.run_job = fake_run_job\n"
        "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    )
    from tests.conftest import REPO_ROOT

    for name in ("gen_kline_shard", "resample_shard"):
        res = subprocess.run(
            [sys.executable, "-c", code, str(REPO_ROOT / "scripts" / f"{name}.py")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert res.stdout.split() == ["group", "True", "after", "False"], (name, res)


def test_a_record_on_another_thread_waits_for_the_folder_fsync_in_progress(tmp_path, monkeypatch):
    """Symbols written on threads (the download and REST jobs): thread A's barrier has taken
    the pending data folder and is fsyncing it; thread B's record must not be renamed until
    that fsync has returned (B finds nothing pending, yet the folder is not durable yet)."""
    import threading

    order: list[str] = []
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync_dir = io.fsync_dir

    def slow_fsync_dir(folder):
        if str(folder) == str(tmp_path / "data"):
            in_fsync.set()
            release.wait(5)
            order.append("data folder durable")
        real_fsync_dir(folder)

    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".json"):
            order.append("record renamed")
        real_replace(src, dst)

    monkeypatch.setattr(io, "fsync_dir", slow_fsync_dir)
    monkeypatch.setattr(os, "replace", replace)
    with io.deferred_dir_syncs():
        io.write_bytes(tmp_path / "data" / "1.pqt", b"1")
        a = threading.Thread(target=io.sync_pending_data_dirs)
        a.start()
        assert in_fsync.wait(5)
        b = threading.Thread(target=io.write_json, args=(tmp_path / "rep" / "r.json", {"a": 1}))
        b.start()
        b.join(0.3)  # B may not finish while A's fsync is in progress
        release.set()
        a.join(5)
        b.join(5)
    assert order == ["data folder durable", "record renamed"], order


@pytest.mark.parametrize(
    "script, module, entry",
    [
        ("aws_download_shard", "crypto_lakehouse.archive.sync", "run_sync_shard"),
        ("aws_parse_klines", "crypto_lakehouse.shards", "for_each_symbol"),
        ("aws_parse_funding", "crypto_lakehouse.shards", "for_each_symbol"),
        ("aws_parse_ticks", "crypto_lakehouse.shards", "for_each_symbol"),
        ("api_download_shard", "crypto_lakehouse.rest.host", "run_host_shard"),
        ("list_archive", "crypto_lakehouse.archive.listing", "run_listings"),
        ("list_archive_dataset", "crypto_lakehouse.archive.listing", "run_listing"),
    ],
)
def test_download_parse_rest_and_listing_scripts_run_in_one_commit_group(script, module, entry):
    """The jobs that write a file per symbol and day (archive zips, parsed days, REST days,
    listings) run their entry point inside the group too: their folders are fsynced once per
    barrier, not once per file (checked on the entry point the script hands to run_job, the
    module's function replaced by a probe before the script imports it)."""
    code = (
        "import importlib, runpy, sys\n"
        "from crypto_lakehouse import io, smk\n"
        "def probe(*a, **k):\n"
        "    print('group', io._GROUP is not None)\n"
        "mod = importlib.import_module(sys.argv[2])\n"
        "setattr(mod, sys.argv[3], (lambda f: probe) if sys.argv[3] == 'for_each_symbol' else probe)\n"
        "def fake_run_job(func, **kw):\n"
        "    func()\n"
        "    print('after', io._GROUP is not None)\n"
        "smk.run_job = fake_run_job\n"
        "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    )
    from tests.conftest import REPO_ROOT

    res = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "scripts" / f"{script}.py"), module, entry],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert res.stdout.split() == ["group", "True", "after", "False"], res


def test_resample_tail_outputs_wait_for_their_fsyncs_together(tmp_path, monkeypatch):
    """A resample tail build writes its outputs of one segment a few at a time on a local
    disk (fsync on): their fsyncs are in flight together instead of one after another; the
    same bytes and reports as one at a time (fsync off writes them one after another)."""
    import threading
    import time

    from tests.unit import test_generate_tail as gt
    from tests.unit.test_job_without_pandas import _gen_and_resample

    monkeypatch.setattr(gt.parquet_append, "ROW_GROUP_ROWS", 5000)
    real_fsync = os.fsync
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "tracking": False}

    def slow_fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        slow = state["tracking"] and "resampled" in path and ".tmp-" in path
        if slow:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.03)  # a journal commit on a busy disk
        try:
            real_fsync(fd)
        finally:
            if slow:
                with lock:
                    state["now"] -= 1

    io.configure(fsync=False)  # reference: the outputs one after another
    try:
        _gen_and_resample(tmp_path / "one")
    finally:
        io.configure(fsync=True)
    one = gt.outputs(tmp_path / "one")

    monkeypatch.setattr(gt, "resample", _tracking(gt.resample, state))
    monkeypatch.setattr(os, "fsync", slow_fsync)
    _gen_and_resample(tmp_path / "together")
    assert state["most"] > 1, state
    together = gt.outputs(tmp_path / "together")
    assert one.keys() == together.keys() and len(one) > 3
    assert all(one[name] == together[name] for name in one)
    a = json.loads((tmp_path / "one/rep/resample.json").read_text())
    b = json.loads((tmp_path / "together/rep/resample.json").read_text())
    assert a == b


def _tracking(resample, state):
    """gt.resample that counts fsyncs in flight only during its tail build (the second)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        state["tracking"] = calls["n"] == 2
        try:
            return resample(*args, **kwargs)
        finally:
            state["tracking"] = False

    return wrapped
