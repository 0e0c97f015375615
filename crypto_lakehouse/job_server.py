"""The job fork server of a local run: Python's start and the jobs' imports once per run, not
once per job (config ``job_server``; docs/architecture.md, "The job server").

Every job of a rule is ``PYTHON scripts/<rule>.py JOB_JSON LOG``: a new interpreter that
imports numpy, pyarrow (and requests, aiohttp) before a few tenths of a second of work.
The run's main process starts one server (:func:`start`, from rules/common.smk while the
Snakefile is parsed) that imports those modules once (``PRELOAD`` at start, a script's own
imports when its first job arrives) and listens on a Unix socket; its
path reaches the jobs in ``SOCKET_ENV``. A job's first import (crypto_lakehouse.job_start)
calls :func:`hand_over`, which sends the job (argv, cwd, environment, umask, and its
stdin/stdout/stderr descriptors) to the server and waits: the server forks a child that
adopts them and runs the script as ``__main__``; the job process exits as the child did
(its status, or the signal that ended it, raised again on itself). Without a server, with
one that refuses the job (another interpreter, other ``PYTHON*`` or locale variables,
other interpreter flags) or inside a SLURM job, the job runs in its own process as before.

What makes a child the job it would have been:

- its own process group (the terminal's Ctrl-C reaches the job process, which forwards
  SIGINT, SIGTERM, SIGHUP and SIGQUIT to the child through the server: exactly one of each;
  Ctrl-Z's SIGTSTP and SIGCONT directly, through a pidfd);
- the job process killed (SIGKILL, or a signal it forwards) or gone: the server kills the
  child (its connection closed); the server gone (its parent, the main process, died:
  ``PR_SET_PDEATHSIG``): every child is killed by the kernel;
- nothing of the server's in the child: its listening socket, the other jobs' connections
  and descriptors are closed before the child runs (only 0, 1, 2 are the job's);
- no thread pool is started in the server (only imports: pyarrow creates its pools on
  first use, so ``OMP_NUM_THREADS`` of the job sizes them in the child); numpy's OpenBLAS
  is loaded with one thread (no job calls BLAS; crypto_lakehouse.job_start);
- uncaught exceptions, ``SystemExit`` and ``KeyboardInterrupt`` end the child as the
  interpreter ends a script (traceback from the script's frame on, exit status 1, the
  status of ``SystemExit``, death by SIGINT), without the teardown of the modules (as a
  ``multiprocessing`` fork child: ``_exit``);
- its CPU and peak memory go beside the job's Snakemake benchmark table (which measures the
  waiting job process), where the report reads them (``_write_figures``).

Only the standard library is imported here: the job side runs before any heavy import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

# The socket's path, set by the main process for its jobs.
SOCKET_ENV = "CRYPTO_LAKEHOUSE_JOB_SERVER"
# Any non-empty value other than "0": no server is started and no job hands over (debugging).
DISABLE_ENV = "CRYPTO_LAKEHOUSE_NO_JOB_SERVER"
# Set in a child the server forked (its PID): a job's log says it was forked.
FORKED_ENV = "CRYPTO_LAKEHOUSE_JOB_SERVER_CHILD"

# What every job imports, loaded while the run plans. The modules a job's script imports
# at its top level (and theirs: requests for the REST stages, aiohttp for the archive
# downloads) are loaded when the first job of that script arrives, before its fork: that
# job waits for them as it would have imported them itself, the next ones do not, and a run
# without such jobs never pays for them. None imports pandas (refused in the server:
# crypto_lakehouse.smk.refuse_pandas) or starts a thread.
PRELOAD = (
    "numpy",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.parquet",
    "crypto_lakehouse.job_start",
    "crypto_lakehouse.smk",
    "crypto_lakehouse.io",
    "crypto_lakehouse.lock",
    "crypto_lakehouse.storage",
    "crypto_lakehouse.shards",
    "crypto_lakehouse.jobs",
    "crypto_lakehouse.summary",
)

# Signals a job process passes on to its child (the ones a terminal, Snakemake or a user
# sends to a job); SIGKILL cannot be caught: the closed connection tells the server.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Environment variables read when the interpreter starts: a job whose values differ from the
# server's would have started another interpreter; the server refuses it.
_START_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE")
_PR_SET_PDEATHSIG = 1
# Unix socket paths are at most 107 bytes (sun_path, 108 with the NUL).
SOCKET_PATH_MAX = 107
_HEADER = struct.Struct("!I")
_READ = 1  # selectors.EVENT_READ (selectors is imported by the server only)
# A job waits this long for the server to take it, then runs itself.
START_TIMEOUT_S = 60.0


# ------------------------------------------------------------------ both sides
def disabled(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return value not in ("", "0")


def _interpreter() -> dict:
    """What must be equal between a job's interpreter and the server's."""
    return {
        "executable": os.path.realpath(sys.executable),
        # Options before the script (-u, -X ..., -W ...): jobs have none; the server is
        # started without any (its "-m module" is not one).
        "options": [] if _SERVING else sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)],
        "flags": list(sys.flags),
        "warnoptions": list(sys.warnoptions),
        "xoptions": sorted(f"{k}={v}" for k, v in sys._xoptions.items()),
        "start_env": {
            k: v for k, v in os.environ.items() if k.startswith("PYTHON") or k in _START_VARIABLES
        },
    }


def _die_with_parent(sig: int, parent: int) -> None:
    """Be sent ``sig`` when the parent ends (Linux); end now if it has ended already."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the server's getppid check still ends it (serve)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def socket_path(run_dir: str, tmp_dir: str | None = None) -> str:
    """The server's socket: ``{run_dir}/job_server.sock``, or one named after the run
    directory in the temporary folder ($TMPDIR, else /tmp) when that path is too long for a
    Unix socket (a killed run's is replaced by the next run's)."""
    path = os.path.join(os.path.abspath(run_dir), "job_server.sock")
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    import hashlib

    digest = hashlib.sha256(os.fsencode(os.path.abspath(run_dir))).hexdigest()[:16]
    name = f"crypto_lakehouse-job-server-{os.getuid()}-{digest}.sock"
    path = os.path.join(tmp_dir or os.environ.get("TMPDIR") or "/tmp", name)
    return path if len(os.fsencode(path)) <= SOCKET_PATH_MAX else os.path.join("/tmp", name)


# ------------------------------------------------------------------ the job side
def hand_over() -> None:
    """Called by crypto_lakehouse.job_start: run this job in a child of the run's server
    and exit as it did; returns (the job runs here) when there is no server to take it."""
    path = os.environ.get(SOCKET_ENV)
    if not path or os.environ.get("SLURM_JOB_ID") or disabled() or _SERVING:
        return
    status = _run_by_server(path, sys.argv)
    if status is not None:
        _exit_as(status)


def _run_by_server(path: str, argv: list[str]) -> int | None:
    """The child's exit status (negative: the signal that ended it), or None when the
    server did not take the job."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(START_TIMEOUT_S)
        conn.connect(path)
        umask = os.umask(0)
        os.umask(umask)
        request = {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": umask,
            "interpreter": _interpreter(),
        }
        _send_request(conn, request, [0, 1, 2])
        reader = conn.makefile("rb")
        started_reply = _read_message(reader)
    except OSError:
        conn.close()
        return None
    if not started_reply or "pid" not in started_reply:
        conn.close()  # refused, or the server ended before taking it
        return None
    # From here on the job is the child's: this process only passes signals and waits.
    started = time.monotonic()
    conn.settimeout(None)
    previous = {
        s: signal.signal(s, lambda signum, frame: _forward(conn, signum)) for s in FORWARDED
    }
    previous.update(_pause_with_child(started_reply["pid"]))
    try:
        while True:
            try:
                ended = _read_message(reader)
            except OSError:
                ended = None
            if ended is None:
                # The server died (and its children with it: PR_SET_PDEATHSIG).
                return -signal.SIGKILL
            if "status" in ended:
                if ended.get("figures"):
                    _write_figures(ended, time.monotonic() - started)
                return int(ended["status"])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        conn.close()


def _write_figures(ended: dict, seconds: float) -> None:
    """The job's wall time, CPU time (the child's and this process's) and peak memory beside
    its Snakemake benchmark table, as crypto_lakehouse.remote writes a node's: Snakemake
    measures this process, which only waited (crypto_lakehouse.report.records)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        "s": round(seconds, 4),
        "cpu_time": round(ended["cpu_time"] + usage.ru_utime + usage.ru_stime, 4),
        "max_rss": round(max(ended["max_rss"], usage.ru_maxrss / 1024), 2),
        "host": socket.gethostname(),
        "job_server": True,
    }
    path = ended["figures"]
    temp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(temp, "w") as f:
            json.dump(figures, f)
        os.replace(temp, path)
    except OSError:  # no benchmark folder (a job run by hand): nothing to measure against
        try:
            os.unlink(temp)
        except OSError:
            pass


def _pause_with_child(pid: int) -> dict:
    """Ctrl-Z (SIGTSTP to the run's process group) stops the child with this process, and
    SIGCONT (``fg``, ``bg``) continues both: the child is in a process group of its own,
    and the server, stopped with the run, forwards nothing then. Through a pidfd (the
    child's PID cannot be another process's while the server has not reaped it, nor after:
    the pidfd stays the child's). Returns the handlers it replaced."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return {}

    def stop_both(signum, frame):
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        except OSError:
            pass
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, stop_both)

    def continue_child(signum, frame):
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        except OSError:
            pass

    return {
        signal.SIGTSTP: signal.signal(signal.SIGTSTP, stop_both),
        signal.SIGCONT: signal.signal(signal.SIGCONT, continue_child),
    }


def _forward(conn: socket.socket, signum: int) -> None:
    try:
        conn.send(bytes([signum]))
    except OSError:
        pass  # the server is gone: the child with it


def _exit_as(status: int) -> None:
    """End this process as the child ended: its exit status, or the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status >= 0:
        os._exit(status)
    sig = -status
    if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those have no handler to reset
        try:
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        except (OSError, ValueError):
            pass
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal whose default action is not to end the process


def _send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    data = json.dumps(request).encode()
    payload = _HEADER.pack(len(data)) + data
    sent = socket.send_fds(conn, [payload], fds)
    if sent < len(payload):
        conn.sendall(payload[sent:])


def _read_message(reader) -> dict | None:
    line = reader.readline()
    return json.loads(line) if line else None


# ------------------------------------------------------------------ the main process's side
class ServerHandle:
    """The server process as the main process sees it."""

    def __init__(self, proc, path: str):
        self.proc = proc
        self.path = path

    def stop(self) -> None:
        """End the server and remove its socket. At the run's end no job runs any more
        (Snakemake waited for them), so a SIGKILL: no wait for imports still under way or
        for the server's own exit (a child left, if any, dies with it: PR_SET_PDEATHSIG)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if os.environ.get(SOCKET_ENV) == self.path:  # a later run in this process starts its own
            del os.environ[SOCKET_ENV]


def start(run_dir: str, python: str | None = None) -> ServerHandle:
    """Start the run's server (it imports in the background) and name its socket in this
    process's environment, which the jobs inherit. Called by the main process of a run."""
    import subprocess

    path = socket_path(run_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "crypto_lakehouse.job_server", path, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )
    os.environ[SOCKET_ENV] = path
    return ServerHandle(proc, path)


# ------------------------------------------------------------------ the server
_SERVING = False  # True in the server and its children: never hand over from there


class _Job:
    """A request the server took, as the forked child sees it."""

    def __init__(self, request: dict):
        self.argv = request["argv"]
        self.cwd = request["cwd"]
        self.env = request["env"]
        self.umask = request["umask"]


class _Stop(BaseException):
    """SIGTERM to the server: end it."""


def _refusal(request: dict, mine: dict) -> str | None:
    theirs = request.get("interpreter")
    if theirs != mine:
        return "another interpreter, its flags or its start variables"
    argv = request.get("argv") or []
    if not argv or not os.path.isfile(os.path.join(request.get("cwd", ""), argv[0])):
        return "no script"
    return None


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10.0)
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        while len(data) < _HEADER.size:
            more = conn.recv(65536)
            if not more:
                raise ConnectionError("short request")
            data += more
        (size,) = _HEADER.unpack_from(data)
        while len(data) < _HEADER.size + size:
            more = conn.recv(max(65536, size))
            if not more:
                raise ConnectionError("short request")
            data += more
        if len(fds) != 3:
            raise ConnectionError("no descriptors")
        return json.loads(data[_HEADER.size : _HEADER.size + size]), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _send(conn: socket.socket, message: dict) -> bool:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
        return True
    except OSError:
        return False


class _Child:
    def __init__(self, pid: int, pidfd: int, conn: socket.socket | None, figures: str | None):
        self.pid = pid
        self.pidfd = pidfd
        self.conn = conn
        self.figures = figures  # where the job process writes the child's figures

    def kill(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except OSError:
            pass


def _figures_path(argv: list[str]) -> str | None:
    """``scripts/<rule>.py JOB_JSON LOG``: the file beside the job's Snakemake benchmark table
    that holds the job's own figures (``layout.node_figures_path``, which the report prefers
    to the table's: the table measured the job process, not the child that did the work)."""
    if len(argv) != 3:
        return None
    from crypto_lakehouse import layout

    try:
        return layout.node_figures_path(argv[2])
    except ValueError:
        return None


class Server:
    def __init__(self, path: str, parent: int | None):
        import selectors

        self.path = path
        self.parent = parent
        self.forked = 0
        self.children: dict[int, _Child] = {}  # pidfd -> child
        self.by_conn: dict[int, _Child] = {}  # connection fd -> child
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(path)  # a killed run's (the run lock says no other run is alive)
        except FileNotFoundError:
            pass
        self.listener.bind(path)
        # Jobs that connect while the imports run wait in the backlog.
        self.listener.listen(128)
        self.selector = selectors.DefaultSelector()
        self.interpreter: dict | None = None
        self.scripts: dict[str, list[str]] = {}  # script path -> its top-level imports

    def preload(self) -> None:
        from crypto_lakehouse.smk import refuse_pandas

        refuse_pandas()  # a module that imports pandas at its top is left to the child
        self._import(PRELOAD)
        self.interpreter = _interpreter()

    def _import(self, names) -> None:
        import gc
        import importlib

        fresh = [name for name in names if name not in sys.modules]
        for name in fresh:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - the child imports it again, as alone
                if isinstance(exc, _Stop):
                    raise
        if fresh:
            # Objects of the imports live as long as every child: the children's
            # collections skip them (as smk.skip_exit_collection does at a job's end).
            gc.collect()
            gc.freeze()

    def _script_imports(self, script: str) -> list[str]:
        """The modules ``script`` imports at its top level (the scripts are thin wrappers:
        ``from crypto_lakehouse.X import entry``), read once per script."""
        if script not in self.scripts:
            import ast

            names = []
            try:
                with open(script, "rb") as f:
                    tree = ast.parse(f.read())
                for node in tree.body:
                    if isinstance(node, ast.Import):
                        names += [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.append(node.module)
            except (OSError, SyntaxError, ValueError):
                pass
            self.scripts[script] = names
        return self.scripts[script]

    def serve(self) -> _Job | None:
        """Serve until SIGTERM or the parent's end; returns a job in a forked child."""

        self.listener.setblocking(False)
        self.selector.register(self.listener, _READ, "accept")
        try:
            while True:
                if self.parent is not None and os.getppid() != self.parent:
                    return None
                for key, _events in self.selector.select(timeout=1.0):
                    kind = key.data
                    if kind == "accept":
                        job = self._accept()
                        if job is not None:
                            return job  # in the child
                    elif kind == "conn":
                        self._from_client(key.fileobj)
                    else:
                        self._reap(kind)
        except _Stop:
            return None
        finally:
            if _SERVER_PID == os.getpid():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ending already
                self._shut_down()

    def _accept(self) -> _Job | None:
        try:
            conn, _addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        try:
            request, fds = _receive_request(conn)
        except (OSError, ValueError):
            conn.close()
            return None
        refusal = _refusal(request, self.interpreter)
        if not refusal:
            script = os.path.join(request["cwd"], request["argv"][0])
            self._import(self._script_imports(os.path.abspath(script)))
            if threading_count() > 1:  # an import started a thread: no fork from here on
                refusal = "a thread runs in the server"
        if refusal:
            _send(conn, {"refused": refusal})
            conn.close()
            for fd in fds:
                os.close(fd)
            return None
        go_read, go_write = os.pipe()
        # Signals wait until the child has its own handlers (a forwarded SIGTERM must not
        # meet the server's).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            return self._become_child(conn, fds, go_read, request, blocked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(go_read)
        for fd in fds:
            os.close(fd)
        self.forked += 1
        pidfd = os.pidfd_open(pid)
        child = _Child(pid, pidfd, conn, _figures_path(request["argv"]))
        self.children[pidfd] = child
        self.selector.register(pidfd, _READ, pidfd)
        if _send(conn, {"pid": pid, "forked": self.forked}):
            os.write(go_write, b"g")
            conn.setblocking(False)
            self.by_conn[conn.fileno()] = child
            self.selector.register(conn, _READ, "conn")
        else:  # the job process is gone already: the child never runs the job
            child.kill(signal.SIGKILL)
            child.conn = None
            conn.close()
        os.close(go_write)
        return None

    def _from_client(self, conn: socket.socket) -> None:
        child = self.by_conn[conn.fileno()]
        try:
            data = conn.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            for sig in data:
                child.kill(sig)
            return
        # The job process ended before its child (SIGKILL): the job must not live on.
        child.kill(signal.SIGKILL)
        self._forget_conn(child)

    def _forget_conn(self, child: _Child) -> None:
        if child.conn is not None:
            del self.by_conn[child.conn.fileno()]
            self.selector.unregister(child.conn)
            child.conn.close()
            child.conn = None

    def _reap(self, pidfd: int) -> None:
        child = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        _pid, status, usage = os.wait4(child.pid, 0)
        os.close(pidfd)
        if child.conn is not None:
            child.conn.setblocking(True)
            ended = {
                "status": os.waitstatus_to_exitcode(status),
                "cpu_time": usage.ru_utime + usage.ru_stime,
                "max_rss": usage.ru_maxrss / 1024,  # Linux: KiB -> MiB, as Snakemake's
                "figures": child.figures,
            }
            _send(child.conn, ended)
            self._forget_conn(child)

    def _shut_down(self) -> None:
        for child in list(self.children.values()):
            child.kill(signal.SIGKILL)
        for child in list(self.children.values()):
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)
        except OSError:
            pass

    # -------------------------------------------------------------- in the child
    def _become_child(self, conn, fds, go_read, request, blocked) -> _Job:
        os.setpgid(0, 0)  # the job process forwards the terminal's signals: one of each
        _die_with_parent(signal.SIGKILL, _SERVER_PID)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        # Nothing of the server's stays open in the job: the selector, the socket, the
        # other jobs' connections and children.
        os.close(self.selector.fileno())
        self.listener.close()
        for other in self.children.values():
            os.close(other.pidfd)
            if other.conn is not None:
                other.conn.close()
        conn.close()
        # Until the server told the job process it runs here.
        ok = os.read(go_read, 1)
        os.close(go_read)
        if not ok:
            os._exit(1)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        return _Job(request)


_SERVER_PID: int | None = None


def threading_count() -> int:
    """Threads of this process, those Python did not start too (a fork copies only the
    calling one; a lock another held stays locked in the child). pyarrow's jemalloc starts
    a purging thread when the library loads, which its fork handlers take care of."""
    try:
        names = os.listdir("/proc/self/task")
    except OSError:
        import threading

        return threading.active_count()
    count = 0
    for tid in names:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != "jemalloc_bg_thd":
                    count += 1
        except OSError:
            pass
    return count


def _on_sigterm(signum, frame):
    raise _Stop()


def _reopen_stdio() -> None:
    """Standard streams for the job's descriptors, as the interpreter makes them at start:
    stdout line-buffered only on a terminal, stderr line-buffered."""
    import io

    # -u is refused (_interpreter); PYTHONUNBUFFERED is the server's too.
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, name)
        raw = io.FileIO(fd, mode + "b", closefd=False)
        if mode == "r":
            buffer = io.BufferedReader(raw)
        elif unbuffered:
            buffer = raw
        else:
            buffer = io.BufferedWriter(raw)
        stream = io.TextIOWrapper(
            buffer,
            encoding=old.encoding,
            errors=old.errors,
            line_buffering=(name == "stderr" or (name == "stdout" and raw.isatty())),
            write_through=unbuffered and mode == "w",
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run_job(job: _Job) -> None:
    """In the child: become the job's process and run its script as ``__main__``."""
    import runpy
    import tempfile
    import time

    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    os.environ[FORKED_ENV] = str(os.getpid())
    time.tzset()
    tempfile.tempdir = None
    os.umask(job.umask)
    # OpenBLAS was loaded with one thread in the server (crypto_lakehouse.job_start).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The interpreter runs a script by its absolute path (its frames' file names, __file__).
    script = os.path.abspath(job.argv[0])
    sys.argv = list(job.argv)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    _reopen_stdio()
    # As in a new interpreter: pandas importable until the job refuses it (smk.run_job).
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_PandasRefused"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        _exit(_system_exit_status(exc))
    except BaseException as exc:  # noqa: BLE001 - ends the child as the interpreter would
        _report_uncaught(exc, script)
        if isinstance(exc, KeyboardInterrupt):
            _end_by_sigint()
        _exit(1)
    _exit(0)


def _system_exit_status(exc: SystemExit) -> int:
    """The interpreter's exit status for an uncaught ``SystemExit`` (its message printed)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except (OSError, ValueError):
        pass
    return 1


def _finish_interpreter() -> None:
    """What the interpreter does at its end before the module teardown: the non-daemon
    threads joined, the exit handlers run (logging's flush among them), the standard
    streams flushed."""
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _exit(status: int) -> None:
    """The interpreter's exit without its teardown of the modules: the non-daemon threads
    joined, the exit handlers run (logging's flush among them), the standard streams
    flushed, then ``os._exit``. The teardown would touch every object of the server's
    imports, copying the pages the child shares with the server (measured: ~0.05 CPU s per
    job, most of what a forked job cost); a fork child ends this way in multiprocessing too.
    Not run: finalizers of objects still referenced at exit (a job closes what it writes)."""
    _finish_interpreter()
    os._exit(status)


def _report_uncaught(exc: BaseException, script: str) -> None:
    """``sys.excepthook`` on an exception that left the script, its traceback from the
    script's frame on (the server's frames are not the job's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    try:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    except Exception:  # noqa: BLE001 - as the interpreter: the default hook then
        sys.__excepthook__(type(exc), exc, exc.__traceback__)


def _end_by_sigint() -> None:
    """The interpreter's end after an uncaught KeyboardInterrupt: the non-daemon threads
    joined, the exit handlers run, the streams flushed, then death by SIGINT."""
    _finish_interpreter()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _can_watch_children() -> bool:
    """Whether this kernel gives pidfds (Linux >= 5.3), by which the server watches and
    signals its children; an older one (e.g. the 3.10 of a CentOS 7 login node) gets no
    server rather than one that fails at its first fork."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (OSError, AttributeError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    global _SERVING, _SERVER_PID
    argv = sys.argv[1:] if argv is None else argv
    path, parent = argv[0], int(argv[1]) if len(argv) > 1 else None
    if not _can_watch_children():
        return 0  # no socket bound: every job runs in its own process, as without a server
    _SERVING = True
    _SERVER_PID = os.getpid()
    # The terminal's Ctrl-C reaches the run's process group, this server too: the jobs'
    # processes forward it to their children; the server ends when the run does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Before the imports: OpenBLAS reads it when numpy loads it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.pop(SOCKET_ENV, None)
    server = None
    try:
        if parent is not None:
            _die_with_parent(signal.SIGTERM, parent)
        server = Server(path, parent)
        server.preload()
        job = server.serve()
    except _Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ending already
        if server is not None:
            server._shut_down()
        return 0
    if job is None:
        return 0
    _run_job(job)
    return 0


if __name__ == "__main__":
    from crypto_lakehouse import job_server

    sys.exit(job_server.main())
