"""Job logging (crypto_lakehouse.logs): the log file and the console."""

from __future__ import annotations

import errno
import logging

import pytest

from crypto_lakehouse.logs import LogFile, configure_logging


class _FullDisk:
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        pass


@pytest.fixture
def restore_logging():
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    root = logging.getLogger()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_a_log_file_that_cannot_be_written_is_named_once_and_dropped(
    tmp_path, capsys, restore_logging
):
    # On a full disk logging printed "--- Logging error ---" and a traceback per record.
    log_file = tmp_path / "job.log"
    configure_logging(log_file)
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, LogFile)]
    handler.stream = _FullDisk()
    log = logging.getLogger("crypto_lakehouse.test")
    log.info("first record")
    log.info("second record")
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("cannot write the log file") == 1
    assert f"cannot write the log file {log_file} (OSError: [Errno 28] No space left" in err
    assert "first record" in err and "second record" in err  # the console keeps them
    assert handler not in logging.getLogger().handlers


def _snakemake_logs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("x")
    return folder


def test_prune_snakemake_logs_keeps_the_newest_and_this_runs_own(tmp_path):
    from crypto_lakehouse.logs import prune_snakemake_logs

    folder = tmp_path / ".snakemake" / "log"
    # Runs of 2026-01-01 .. 2026-01-09 (ISO names sort by start time), plus a stranger.
    names = [f"2026-01-0{d}T060000.000000.snakemake.log" for d in range(1, 10)]
    _snakemake_logs(folder, [*names, "notes.txt"])
    removed = prune_snakemake_logs([str(folder / names[-1])], keep=3)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["notes.txt", *names[-3:]])
    assert sorted(removed) == sorted(str(folder / n) for n in names[:-3])


def test_prune_snakemake_logs_never_removes_the_current_log(tmp_path):
    from crypto_lakehouse.logs import prune_snakemake_logs

    folder = tmp_path / "log"
    # A clock set back: this run's log sorts first; it stays, the others go down to keep.
    names = ["2030-01-01T000000.000000.snakemake.log", "2031-01-01T000000.000000.snakemake.log"]
    _snakemake_logs(folder, ["2020-01-01T000000.000000.snakemake.log", *names])
    prune_snakemake_logs(str(folder / "2020-01-01T000000.000000.snakemake.log"), keep=1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "2020-01-01T000000.000000.snakemake.log",
        names[1],
    ]


def test_prune_snakemake_logs_without_a_log_touches_nothing(tmp_path):
    from crypto_lakehouse.logs import prune_snakemake_logs

    folder = _snakemake_logs(tmp_path / "log", [f"2026-01-0{d}.snakemake.log" for d in range(1, 5)])
    assert prune_snakemake_logs([], keep=1) == []
    assert len(list(folder.iterdir())) == 4


@pytest.mark.parametrize("keep", [0, -1, 2.5, "30", True])
def test_prune_snakemake_logs_refuses_a_keep_that_is_no_count(tmp_path, keep):
    from crypto_lakehouse.logs import prune_snakemake_logs

    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "2020-01-01T000000.000000.snakemake.log").write_text("x")
    with pytest.raises(ValueError, match="snakemake_logs_kept"):
        prune_snakemake_logs([str(folder / "2020-01-01T000000.000000.snakemake.log")], keep=keep)
    assert (folder / "2020-01-01T000000.000000.snakemake.log").exists()
