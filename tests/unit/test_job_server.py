"""The job fork server (crypto_lakehouse.job_server): a job handed over behaves as the same
job run in its own interpreter (exit status, signals, output, arguments), and runs itself
when there is no server to take it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crypto_lakehouse import job_server
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
FORKED = job_server.FORKED_ENV


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) is gone for these tests.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (job_server.SOCKET_ENV, FORKED)}
    env.pop(job_server.DISABLE_ENV, None)
    env.pop("SLURM_JOB_ID", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture
def server(tmp_path):
    """A server of this test process (its parent); yields its socket path."""
    path = job_server.socket_path(str(tmp_path / "run"))
    os.makedirs(tmp_path / "run", exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_lakehouse.job_server", path, str(os.getpid())],
        env=_env(),
        cwd=tmp_path,
    )
    assert wait_for(lambda: os.path.exists(path)), "the server never bound its socket"
    yield path
    proc.terminate()
    proc.wait(30)
    assert not os.path.exists(path), "the server left its socket"


def _script(tmp_path: Path, body: str, name="job.py") -> Path:
    path = tmp_path / name
    path.write_text("import crypto_lakehouse.job_start  # noqa: F401\n" + textwrap.dedent(body))
    return path


def _run(script: Path, *args, sock=None, cwd=None, env=None, **kwargs):
    extra = {job_server.SOCKET_ENV: sock} if sock else {}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd or script.parent,
        env=_env(**extra, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


REPORT = (
    """
import json, os, sys
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "value": os.environ.get("JOB_VALUE"),
    "forked": os.environ.get("%s"), "file": __file__, "name": __name__,
    "path0": sys.path[0],
}))
"""
    % FORKED
)


def test_argv_cwd_and_environment_reach_the_forked_job(tmp_path, server):
    script = _script(tmp_path, REPORT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    done = _run(script, "a b", "{json}", sock=server, cwd=workdir, env={"JOB_VALUE": "é x"})
    alone = _run(script, "a b", "{json}", cwd=workdir, env={"JOB_VALUE": "é x"})
    assert done.returncode == 0, done.stderr
    seen, own = json.loads(done.stdout), json.loads(alone.stdout)
    assert seen["forked"] and own["forked"] is None  # the server ran it; the other not
    seen.pop("forked"), own.pop("forked")
    assert seen == own
    assert seen["argv"][1:] == ["a b", "{json}"] and seen["cwd"] == str(workdir)
    assert seen["value"] == "é x" and seen["name"] == "__main__"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_status_is_the_jobs(tmp_path, server, code):
    script = _script(tmp_path, REPORT + "sys.exit(int(sys.argv[1]))\n")
    done = _run(script, str(code), sock=server)
    assert done.returncode == code
    assert json.loads(done.stdout)["forked"]


def test_a_failing_job_fails_with_the_same_traceback_and_status(tmp_path, server):
    script = _script(
        tmp_path,
        """
        import os, sys
        sys.stdout.write(str(bool(os.environ.get("%s"))) + "\\n")
        def work():
            raise ValueError("row 7 of x.csv")
        work()
        """
        % FORKED,
    )
    done = _run(script, sock=server)
    alone = _run(script)
    assert (done.stdout, alone.stdout) == ("True\n", "False\n")
    assert done.returncode == alone.returncode == 1
    assert done.stderr == alone.stderr
    assert done.stderr.startswith('Traceback (most recent call last):\n  File "' + str(script))


def test_system_exit_with_a_message(tmp_path, server):
    script = _script(tmp_path, "raise SystemExit('usage: job.py JOB_JSON LOG_FILE')\n")
    done, alone = _run(script, sock=server), _run(script)
    assert (
        (done.returncode, done.stderr)
        == (alone.returncode, alone.stderr)
        == (
            1,
            "usage: job.py JOB_JSON LOG_FILE\n",
        )
    )


def test_a_job_killed_by_a_signal_ends_by_that_signal(tmp_path, server):
    script = _script(
        tmp_path,
        """
        import os, signal
        open("forked", "w").write(os.environ.get("%s", ""))
        os.kill(os.getpid(), signal.SIGTERM)
        """
        % FORKED,
    )
    done = _run(script, sock=server)
    assert done.returncode == -signal.SIGTERM
    assert (tmp_path / "forked").read_text()


def test_stdout_stderr_and_log_reach_the_jobs_files(tmp_path, server):
    script = _script(
        tmp_path,
        """
        import logging, os, sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
        logging.info("to the log, forked=%%s", bool(os.environ.get("%s")))
        """
        % FORKED,
    )
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        done = subprocess.run(
            [sys.executable, str(script), "job.log"],
            cwd=tmp_path,
            env=_env(**{job_server.SOCKET_ENV: server}),
            stdout=out,
            stderr=err,
            timeout=120,
        )
    assert done.returncode == 0
    assert (tmp_path / "out").read_text() == "to stdout\n"
    assert (tmp_path / "err").read_text() == "to stderr\n"
    assert (tmp_path / "job.log").read_text() == "INFO:root:to the log, forked=True\n"


def test_no_server_or_a_stale_socket_runs_the_job_itself(tmp_path):
    script = _script(tmp_path, REPORT)
    missing = _run(script, sock=str(tmp_path / "none.sock"))
    stale_path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(stale_path))
    stale.close()  # the file stays, nobody listens: a killed run's
    refused = _run(script, sock=str(stale_path))
    for done in (missing, refused):
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["forked"] is None


def test_a_job_with_other_interpreter_options_runs_itself(tmp_path, server):
    script = _script(tmp_path, REPORT)
    done = subprocess.run(
        [sys.executable, "-X", "utf8", str(script)],
        env=_env(**{job_server.SOCKET_ENV: server}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forked"] is None


def test_the_switch_and_slurm_jobs_run_the_job_itself(tmp_path, server):
    script = _script(tmp_path, REPORT)
    for extra in ({job_server.DISABLE_ENV: "1"}, {"SLURM_JOB_ID": "12"}):
        done = _run(script, sock=server, env=extra)
        assert json.loads(done.stdout)["forked"] is None


SLEEPER = (
    """
import os, sys, time
open(sys.argv[1], "w").write(f"{os.getpid()} {os.environ.get('%s', '')}")
time.sleep(120)
"""
    % FORKED
)


def _start_sleeper(tmp_path, sock, name="pid"):
    script = _script(tmp_path, SLEEPER, name="sleeper.py")
    client = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / name)],
        cwd=tmp_path,
        env=_env(**{job_server.SOCKET_ENV: sock}),
        stderr=subprocess.PIPE,
        text=True,
        # As a run's job: the test signals its process group, which is in this session
        # (the kernel ignores Ctrl-Z's SIGTSTP in a group without a parent outside it).
        process_group=0,
    )
    assert wait_for(lambda: (tmp_path / name).exists() and (tmp_path / name).read_text())
    pid, forked = (tmp_path / name).read_text().split(" ")
    assert forked == pid  # the server's child, not the client
    return client, int(pid)


def test_a_killed_job_process_leaves_no_child(tmp_path, server):
    client, child = _start_sleeper(tmp_path, server)
    assert child != client.pid and _alive(child)
    client.kill()
    client.wait()
    assert wait_for(lambda: not _alive(child)), "the child lived on after its job process"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_the_job_process_group_reach_the_child_once(tmp_path, server, sig):
    script = _script(
        tmp_path,
        """
        import os, signal, sys, time
        caught = []
        signal.signal(int(sys.argv[2]), lambda s, f: caught.append(s))
        open(sys.argv[1], "w").write(os.environ.get("%s", "-"))
        while not caught:
            time.sleep(0.01)
        time.sleep(0.5)  # a second delivery would be counted
        sys.exit(10 + len(caught))
        """
        % FORKED,
    )
    client = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "ready"), str(int(sig))],
        cwd=tmp_path,
        env=_env(**{job_server.SOCKET_ENV: server}),
        start_new_session=True,
    )
    assert wait_for(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text())
    assert (tmp_path / "ready").read_text() != "-"
    os.killpg(client.pid, sig)  # as the terminal's Ctrl-C does
    assert client.wait(60) == 11


def test_ctrl_c_ends_the_job_as_interrupted(tmp_path, server):
    client, child = _start_sleeper(tmp_path, server)
    os.killpg(client.pid, signal.SIGINT)
    assert client.wait(60) == -signal.SIGINT
    # job_start's hook: one line, no traceback of the server's frames
    assert "Traceback" not in client.stderr.read()
    assert not _alive(child)


def test_concurrent_jobs_each_run_in_their_own_child(tmp_path, server):
    script = _script(
        tmp_path,
        """
        import os, sys, time
        time.sleep(0.3)
        print(sys.argv[1], os.getpid(), os.environ.get("%s"))
        """
        % FORKED,
    )
    clients = [
        subprocess.Popen(
            [sys.executable, str(script), str(i)],
            env=_env(**{job_server.SOCKET_ENV: server}),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(5)
    ]
    outputs = [c.communicate(timeout=120)[0].split() for c in clients]
    assert [c.returncode for c in clients] == [0] * 5
    assert [o[0] for o in outputs] == [str(i) for i in range(5)]
    pids = {o[1] for o in outputs}
    assert len(pids) == 5 and all(o[1] == o[2] for o in outputs)


def test_the_child_holds_no_descriptor_of_the_server_or_other_jobs(tmp_path, server):
    fd_report = (
        """
    import json, os, sys
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own descriptor, closed already
    print(json.dumps({"fds": fds, "forked": bool(os.environ.get("%s"))}))
    """
        % FORKED
    )
    script = _script(tmp_path, fd_report)
    _other, _pid = _start_sleeper(tmp_path, server)  # another job's descriptors exist
    try:
        with open(tmp_path / "out", "w") as out:
            subprocess.run(
                [sys.executable, str(script)],
                env=_env(**{job_server.SOCKET_ENV: server}),
                stdout=out,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
        with open(tmp_path / "out_alone", "w") as out:
            subprocess.run(
                [sys.executable, str(script)],
                env=_env(),
                stdout=out,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
    finally:
        _other.kill()
        _other.wait()
    seen = json.loads((tmp_path / "out").read_text())
    alone = json.loads((tmp_path / "out_alone").read_text())
    assert seen["forked"] and not alone["forked"]
    assert seen["fds"].pop("1") == str(tmp_path / "out")
    assert alone["fds"].pop("1") == str(tmp_path / "out_alone")
    assert seen["fds"] == alone["fds"]  # 0 and 2 (/dev/null); the listing's own is gone
    assert not any(t.startswith(("socket:", "pipe:", "anon_inode:")) for t in seen["fds"].values())


@pytest.mark.parametrize("threads", ["1", "3"])
def test_the_jobs_thread_settings_size_pyarrows_pool_in_the_child(tmp_path, server, threads):
    script = _script(
        tmp_path,
        """
        import os, pyarrow
        print(pyarrow.cpu_count(), bool(os.environ.get("%s")))
        """
        % FORKED,
    )
    done = _run(script, sock=server, env={"OMP_NUM_THREADS": threads})
    assert done.stdout.split() == [threads, "True"], done.stderr


def test_the_server_and_its_children_end_with_the_process_that_started_it(tmp_path):
    starter = tmp_path / "starter.py"
    starter.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from crypto_lakehouse import job_server
            handle = job_server.start(sys.argv[1])
            print(handle.proc.pid, handle.path, flush=True)
            time.sleep(300)
            """
        )
    )
    starter_proc = subprocess.Popen(
        [sys.executable, str(starter), str(tmp_path / "run")],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid, path = starter_proc.stdout.readline().split()
    assert wait_for(lambda: os.path.exists(path))
    client, child = _start_sleeper(tmp_path, path)
    starter_proc.kill()  # kill -9 of the run's main process alone
    starter_proc.wait()
    assert wait_for(lambda: not _alive(int(server_pid))), "the server outlived its run"
    assert wait_for(lambda: not _alive(child)), "a job outlived the server"
    assert client.wait(60) == -signal.SIGKILL


def test_stop_ends_the_server_and_removes_its_socket(tmp_path):
    handle = job_server.start(str(tmp_path / "run"))
    try:
        assert os.environ[job_server.SOCKET_ENV] == handle.path
        assert wait_for(lambda: os.path.exists(handle.path))
    finally:
        handle.stop()
    assert handle.proc.returncode is not None and not os.path.exists(handle.path)
    # A later Snakemake run in this process (the CLI runs it in-process) starts its own.
    assert job_server.SOCKET_ENV not in os.environ


def test_a_run_dir_too_long_for_a_socket_gets_one_in_the_temporary_folder(tmp_path):
    short = job_server.socket_path("/data/lakehouse")
    assert short == "/data/lakehouse/job_server.sock"
    deep = "/data/" + "x" * 120 + "/lakehouse"
    path = job_server.socket_path(deep, tmp_dir="/var/tmp")
    assert os.path.dirname(path) == "/var/tmp"
    assert len(os.fsencode(path)) <= job_server.SOCKET_PATH_MAX
    assert path == job_server.socket_path(deep, tmp_dir="/var/tmp")  # stable per run dir
    assert path != job_server.socket_path(deep + "2", tmp_dir="/var/tmp")
    # A temporary folder too deep as well: /tmp.
    assert os.path.dirname(job_server.socket_path(deep, tmp_dir="/t/" + "y" * 90)) == "/tmp"


def test_the_server_imports_no_pandas_and_starts_no_python_thread():
    code = textwrap.dedent(
        """
        import sys, threading
        from crypto_lakehouse import job_server
        for name in job_server.PRELOAD:
            __import__(name)
        print("pandas" in sys.modules, threading.active_count())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["False", "1"], done.stderr


def test_a_job_may_import_pandas_though_the_server_refuses_it(tmp_path, server):
    # The server keeps pandas out of its imports (crypto_lakehouse.smk.refuse_pandas); a
    # forked job starts as a new interpreter: pandas importable until the job refuses it.
    script = _script(
        tmp_path,
        """
        import os, sys
        import pandas
        from crypto_lakehouse.smk import refuse_pandas
        print(bool(os.environ.get("%s")), refuse_pandas())
        """
        % FORKED,
    )
    done = _run(script, sock=server)
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_the_jobs_own_figures_go_beside_its_benchmark_table(tmp_path, server):
    # Snakemake's benchmark table measures the job process, which only waits: the child's
    # CPU and memory go where the report reads a launched job's (layout.node_figures_path).
    script = _script(
        tmp_path,
        """
        import time
        while time.process_time() < 0.3:
            pass
        """,
    )
    log = tmp_path / "run" / "logs" / "gen_kline" / "spot" / "shards" / "0.log"
    benchmarks = tmp_path / "run" / "benchmarks" / "gen_kline" / "spot" / "shards"
    benchmarks.mkdir(parents=True)
    done = _run(script, "{}", str(log), sock=server)
    assert done.returncode == 0, done.stderr
    figures = json.loads((benchmarks / "0.node.json").read_text())
    assert figures["job_server"] is True and figures["cpu_time"] >= 0.3
    assert figures["max_rss"] > 1 and figures["s"] > 0
    assert [p.name for p in benchmarks.iterdir()] == ["0.node.json"]  # no temporary left


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]


def test_ctrl_z_stops_the_child_with_the_job_process_and_fg_continues_both(tmp_path, server):
    client, child = _start_sleeper(tmp_path, server)
    try:
        os.killpg(client.pid, signal.SIGTSTP)  # as the terminal's Ctrl-Z
        assert wait_for(lambda: _state(child) == "T" and _state(client.pid) == "T")
        os.killpg(client.pid, signal.SIGCONT)
        assert wait_for(lambda: _state(child) != "T" and _state(client.pid) != "T")
    finally:
        client.kill()
        client.wait()


def test_a_kernel_without_pidfds_gets_no_server_and_jobs_run_themselves(tmp_path, monkeypatch):
    """Linux < 5.3 (CentOS 7's 3.10 on cluster login nodes) has no pidfd_open: the server
    ends at once without binding its socket, so every job falls back to its own process."""

    def no_pidfds(pid, flags=0):
        raise OSError(38, "Function not implemented")

    def no_server(*args):
        raise AssertionError("a server was built without pidfds")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    monkeypatch.setattr(job_server, "Server", no_server)
    path = str(tmp_path / "server.sock")
    assert job_server.main([path]) == 0
    assert not os.path.exists(path)
