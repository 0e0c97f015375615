"""crypto_lakehouse.smk.cancel_scheduler_timers: the workflow's end-of-run hooks cancel
Snakemake's pending scheduler timers, so that the process does not wait for them to fire."""

import threading

from crypto_lakehouse.smk import cancel_scheduler_timers
from tests.conftest import REPO_ROOT


def test_pending_timers_are_cancelled_and_their_callbacks_never_run():
    fired = []
    timers = [threading.Timer(60.0, fired.append, args=(i,)) for i in range(3)]
    for t in timers:
        t.start()
    assert cancel_scheduler_timers() >= 3
    for t in timers:
        t.join(10)  # a cancelled timer's thread ends at once; 60 s if it was not cancelled
        assert not t.is_alive()
    assert fired == []


def test_other_threads_are_left_alone():
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        cancel_scheduler_timers()
        assert worker.is_alive()
    finally:
        stop.set()
        worker.join(10)


def test_both_end_of_run_hooks_cancel_the_timers():
    text = (REPO_ROOT / "Snakefile").read_text()
    for hook in ("onsuccess:", "onerror:"):
        body = text.split(hook, 1)[1].split("\n\n", 1)[0]
        assert "cancel_scheduler_timers()" in body, hook
