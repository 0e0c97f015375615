"""Loaded by every Python process a fake node runs (tests/remote/fake_srun.py): an audit hook
refusing any file operation below the folders in env ``FAKE_NODE_FORBIDDEN`` (the submit
host's run directory and working directory), as if they were on another machine."""

import json
import os
import sys

_FORBIDDEN = [os.path.realpath(p) for p in json.loads(os.environ.get("FAKE_NODE_FORBIDDEN", "[]"))]
# Events whose first argument is a path (Python's audit events table).
_EVENTS = {
    "open",
    "os.listdir",
    "os.scandir",
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "os.utime",
    "os.chmod",
    "shutil.copyfile",
    "shutil.rmtree",
}


def _refuse(event, args):
    if event not in _EVENTS or not args:
        return
    path = args[0]
    if isinstance(path, int) or path is None:
        return
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    for folder in _FORBIDDEN:
        if real == folder or real.startswith(folder + os.sep):
            raise PermissionError(f"fake node: {real} is on the submit host ({event})")


if _FORBIDDEN:
    sys.addaudithook(_refuse)
