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
