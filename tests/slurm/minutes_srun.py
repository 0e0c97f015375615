"""srun for the time-limit tests (config ``cluster.srun``): the real srun, with each
``--time=N`` the launcher passes (the rule's runtime, at least ``sizing.BASE_MINUTES`` = 10)
turned into ``--time=N // 10`` minutes, so that a test sees SLURM's time kill within a
minute and a half instead of ten. A first attempt of a small shard asks 11-19 minutes
(1 here), a retry twice that (2 here). Each call's words are appended as one JSON line to
the file ``$MINUTES_SRUN_CALLS``, as the launcher gave them."""

import json
import os
import sys

words = sys.argv[1:]
with open(os.environ["MINUTES_SRUN_CALLS"], "a") as calls:
    calls.write(json.dumps(words) + "\n")
scaled = [
    f"--time={max(1, int(w.split('=', 1)[1]) // 10)}" if w.startswith("--time=") else w
    for w in words
]
os.execvp("srun", ["srun", *scaled])
