"""On PYTHONPATH for the time-limit tests only: a features job that needs more than one
minute of SLURM time and less than two. In a ``features_shard`` job process running in a
SLURM job whose limit is one minute (``squeue``'s ``%l`` = ``1:00``), the job sleeps after
its first symbol is done (its files written, the next symbols not begun) until SLURM ends
it; with a longer limit it runs as usual."""

import os
import sys

if sys.argv and sys.argv[0].endswith("features_shard.py") and os.environ.get("SLURM_JOB_ID"):
    import subprocess

    limit = subprocess.run(
        ["squeue", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%l"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if limit == "1:00":
        import threading
        import time

        from crypto_lakehouse import jobs

        run_features_rule = jobs.run_features_rule
        # The symbols of a shard run in threads (storage.symbols_at_once): the first to
        # start runs, the others wait for it to end and then sleep.
        started, first_done = threading.Lock(), threading.Event()

        def slow_after_the_first_symbol(*args, **kwargs):
            if started.acquire(blocking=False):
                try:
                    return run_features_rule(*args, **kwargs)
                finally:
                    first_done.set()
            first_done.wait()
            time.sleep(600)  # SLURM's time limit ends the job first

        jobs.run_features_rule = slow_after_the_first_symbol
