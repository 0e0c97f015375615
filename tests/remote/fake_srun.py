"""Stand-in for ``srun`` in the tests of ``cluster.launcher: srun`` (crypto_lakehouse.remote):
it runs the node command on this machine as if on a node that shares no file system with the
submit host.

- srun's own options (``--…``) are dropped; the rest is the node command
  (``PYTHON -m crypto_lakehouse.remote node RUN_DIR``).
- The node command starts in a fresh empty folder (a node's working directory is not the
  submit host's) and with ``node_env/`` first on PYTHONPATH: its ``sitecustomize`` makes every
  Python process of the node (the node side and the job it starts) refuse to open, list,
  create, rename or delete anything below the submit host's run directory and working
  directory (env ``FAKE_NODE_FORBIDDEN``), so a job that still reads or writes them fails.
- Each call appends its options to the file named by env ``FAKE_SRUN_CALLS`` (if set).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

args = sys.argv[1:]
options = []
while args and args[0].startswith("--"):
    options.append(args.pop(0))
run_dir = os.path.abspath(args[-1])  # `... node RUN_DIR`, relative to the submit host's cwd
calls = os.environ.get("FAKE_SRUN_CALLS")
if calls:
    with open(calls, "a") as f:
        f.write(json.dumps({"options": options, "run_dir": run_dir}) + "\n")
node_env = str(Path(__file__).resolve().parent / "node_env")
env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(p for p in (node_env, env.get("PYTHONPATH")) if p)
env["FAKE_NODE_FORBIDDEN"] = json.dumps([run_dir, os.getcwd()])
with tempfile.TemporaryDirectory(prefix="fake-node-") as cwd:
    sys.exit(subprocess.run(args, cwd=cwd, env=env, check=False).returncode)
