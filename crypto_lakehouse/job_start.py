"""The first import of every ``scripts/*.py`` job: Ctrl-C (SIGINT, which the terminal sends
to every job of the run) while the job still imports its modules is one line on stderr, not
a ``KeyboardInterrupt`` traceback of wherever the import was (numpy, pyarrow, requests: a
few hundred milliseconds at each job start). ``logs.configure_logging`` replaces this hook
once the job's log is open. The job still ends by SIGINT (Python re-raises it at exit), so
the run lists it as interrupted. Not covered: the interpreter's own start (``site``, ~30 ms
before this module), which Python alone handles ("Fatal Python error: init_import_site")."""

import os
import sys

# numpy's OpenBLAS starts a thread per core when numpy is imported, and they spin waiting
# for work: ~30-45 ms of CPU per job process (measured: `import numpy, pyarrow` took 0.140
# user s, 0.117 with one thread; held 1 s, 0.173 and 0.128), taken from the other job on a
# 2-core machine. No job calls BLAS (no matrix products), so one thread does: no pool.
# Set before numpy is imported (OpenBLAS reads it when it loads); a user's value is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

STARTING = "crypto_lakehouse: interrupted (SIGINT) while the job started; the next run does it"


def _interrupted_while_starting(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.stderr.write(STARTING + "\n")
        return
    sys.__excepthook__(exc_type, exc, tb)


sys.excepthook = _interrupted_while_starting

# A local run's job server (crypto_lakehouse.job_server) runs this job in a process forked
# from one that imported the job's modules already: this process then only waits for it
# and exits as it did. Checked before anything heavy is imported; without a server (or on
# a SLURM node) the job goes on here.
if os.environ.get("CRYPTO_LAKEHOUSE_JOB_SERVER"):
    from crypto_lakehouse.job_server import hand_over

    hand_over()
