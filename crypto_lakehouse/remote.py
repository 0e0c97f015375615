"""CPU jobs on cluster nodes that share no file system with the submit host
(config ``cluster.launcher: srun``; docs/cluster.md).

Snakemake runs on the submit host with its local executor, and a CPU job's command is::

    PYTHON -m crypto_lakehouse.remote launch [options] PYTHON SCRIPT JOB_JSON LOG

The launcher lives on the submit host for the job's lifetime:

1. it packs the run-directory files the job reads (the per-symbol reports and stats of its
   symbols, and any other existing run-directory file its JSON names) into a tar stream;
2. it runs ``srun [options] PYTHON -m crypto_lakehouse.remote node RUN_DIR`` with that stream
   on stdin, so the node needs neither the run directory nor the working directory, only
   the same Python and repository paths;
3. on the node, ``node`` unpacks the files into a private temporary folder, points every
   run-directory path of the job (its JSON and its log) there, runs the job, and sends back,
   as a tar stream on stdout, every file the job wrote there, with the job's exit status
   and figures (wall, CPU, peak memory: Snakemake's benchmark table measures the launcher)
   and the files it was sent that the job removed (a torn report a job found, removed so
   that the next run rebuilds it: crypto_lakehouse.shards.read_report);
4. the launcher writes those files into the run directory, each atomically, removes the
   removed ones there, and exits with
   the job's status, the figures beside the job's benchmark table
   (``layout.node_figures_path``). A failed job's files (its log, the reports of the symbols it finished)
   come back too: nothing done is lost.

The data never passes through here: with ``data_dir: s3://…`` the node reads and writes the
bucket itself. The launcher holds the run's jobs lock (crypto_lakehouse.lock) while the
node works, so that a run whose main process died still sees its jobs.

Only the standard library and the small path, I/O and lock modules are imported (no
pyarrow): up to ``--cores`` launchers live at once on the submit host.
"""

from __future__ import annotations

import argparse
import io as stdio
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from crypto_lakehouse import io, layout, lock

META = "meta.json"  # first member of the stream to the node: the job and its run directory
STATUS = "status.json"  # last member of the stream back: the job's exit status
FILES = "run/"  # prefix of the run-directory files in both streams
# Files the node does not send back: its own copy of the jobs lock, and temporary files of
# a write that did not finish (there are none unless the job was killed).
_NOT_RETURNED = ("jobs.lock",)
_TEMP_PREFIX = ".tmp-"


class RemoteJobError(RuntimeError):
    """The node returned nothing usable (srun failed, or the stream broke)."""


# ------------------------------------------------------------------ paths of a job
def under(path: str, run_dir: str) -> bool:
    """Whether ``path`` (a string of the job's JSON) lies in ``run_dir`` (same spelling)."""
    return path == run_dir or path.startswith(run_dir.rstrip("/") + "/")


def rebase(value: Any, old: str, new: str) -> Any:
    """``value`` (the job's JSON) with every run-directory path moved from ``old`` to ``new``."""
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if isinstance(value, str) and under(value, old):
        return new.rstrip("/") + value[len(old.rstrip("/")) :]
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _symbol_files(value: Any) -> Iterator[str]:
    """Each ``{dir}/{symbol}.json`` a shard job reads or rewrites: every ``symbol_paths``
    folder for every symbol of the same block (``shards.shard_args``), and its stats twin."""
    if isinstance(value, dict):
        if isinstance(value.get("symbol_paths"), dict) and isinstance(value.get("symbols"), list):
            for folder in value["symbol_paths"].values():
                if isinstance(folder, str):
                    for symbol in value["symbols"]:
                        report = f"{folder}/{symbol}.json"
                        yield report
                        yield layout.stats_path_for(report)
        for v in value.values():
            yield from _symbol_files(v)
    elif isinstance(value, list):
        for v in value:
            yield from _symbol_files(v)


def input_files(job: dict, run_dir: str) -> list[str]:
    """The run-directory files the node needs: those of the job's symbols, and any other
    existing file the job's JSON names (e.g. the exchange_info summary). Folders are not
    shipped whole: a trade type's report folder holds every symbol's reports."""
    wanted = {p for p in _symbol_files(job) if under(p, run_dir)}
    wanted |= {s for s in _strings(job) if under(s, run_dir) and s != run_dir}
    return sorted(p for p in wanted if os.path.isfile(p))


def rebased_text(data: bytes, old: str, new: str) -> bytes:
    """A file the job wrote on the node, its paths below the node's copy of the run
    directory (``old``) moved back to the run directory (``new``): a shard report lists each
    symbol's report by its path, which the summary job reads on the submit host (before
    2026-12-06 it read the node's temporary folder: the CPU stages' summaries had no
    totals). JSON strings escape some characters, so their spelling is replaced too."""
    for a, b in {old: new, json.dumps(old)[1:-1]: json.dumps(new)[1:-1]}.items():
        data = data.replace(a.encode(), b.encode())
    return data


def _relative(path: str, run_dir: str) -> str:
    return path[len(run_dir.rstrip("/")) + 1 :]


def safe_member_name(name: str) -> str | None:
    """The run-directory relative path of a returned member, or None for a name that would
    leave the run directory (absolute, ``..``) or is not a run file."""
    if not name.startswith(FILES):
        return None
    rel = PurePosixPath(name[len(FILES) :])
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        return None
    return str(rel)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, stdio.BytesIO(data))


# ------------------------------------------------------------------ submit host
def bundle(argv: list[str], job: dict, run_dir: str) -> bytes:
    """The stream to the node: the job's command (``argv``, its JSON parsed as ``job``) and
    the run-directory files it reads."""
    python, script, _job_text, log = argv
    out = stdio.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        meta = dict(python=python, script=script, job=job, log=log, run_dir=run_dir)
        _add_bytes(tar, META, json.dumps(meta).encode())
        for path in input_files(job, run_dir):
            _add_bytes(tar, FILES + _relative(path, run_dir), Path(path).read_bytes())
    return out.getvalue()


def _read_stream(stream, record: str, write, sender: str) -> dict | None:
    """Every file of a tar stream (the bundle or the answer): the ``record`` member's JSON is
    returned, each run-directory file goes to ``write(relative path, bytes)``; a name that
    would leave the run directory raises RemoteJobError."""
    found = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name == record:
                found = json.loads(data)
                continue
            rel = safe_member_name(member.name)
            if rel is None:
                raise RemoteJobError(f"{sender} sent {member.name!r}, outside the run directory")
            write(rel, data)
    return found


def unpack_returned(stream, run_dir: str) -> dict:
    """Write the node's files into ``run_dir`` (each atomically), remove there the files the
    job removed (status ``removed``), and return the job's status record (``returncode`` and
    the job's figures); a stream without it raises RemoteJobError after writing what came."""

    def write(rel: str, data: bytes) -> None:
        io.write_bytes(os.path.join(run_dir, rel), data)

    status = _read_stream(stream, STATUS, write, "the node")
    if status is None:
        raise RemoteJobError("the node's answer ended before the job's exit status")
    for name in status.pop("removed", None) or ():
        rel = safe_member_name(FILES + str(name))
        if rel is None:
            raise RemoteJobError(f"the node removed {name!r}, outside the run directory")
        Path(run_dir, rel).unlink(missing_ok=True)
    return status


def srun_command(
    srun: list[str], *, cpus: int, mem_mb: int, runtime_min: int, name: str, extra: list[str]
) -> list[str]:
    """srun's options for one job: one task with the job's threads, memory and runtime
    (the rule's resources), then the site's own options (``cluster.srun_args``)."""
    return [
        *srun,
        "--ntasks=1",
        f"--cpus-per-task={cpus}",
        f"--mem={mem_mb}M",
        f"--time={runtime_min}",
        f"--job-name={name}",
        *extra,
    ]


def launch(
    argv: list[str],
    *,
    srun: list[str],
    cpus: int = 1,
    mem_mb: int = 2000,
    runtime_min: int = 30,
    extra: list[str] = (),
) -> int:
    """Run one job (``argv`` = PYTHON SCRIPT JOB_JSON LOG) on a node through srun; returns
    its exit status. Runs on the submit host."""
    python, script, job_text, log = argv
    run_dir = layout.run_dir_of_log(log)
    job = json.loads(job_text)
    if "data_dir" in job:  # as the job would (smk.run_job): a next run waits for it
        lock.hold_job_lock(job["data_dir"], log)
    name = "crypto_lakehouse-" + Path(script).stem
    command = srun_command(
        srun, cpus=cpus, mem_mb=mem_mb, runtime_min=runtime_min, name=name, extra=list(extra)
    )
    command += [python, "-m", "crypto_lakehouse.remote", "node", run_dir]
    sent = bundle(argv, job, run_dir)
    # Until the node's log comes back, the log says where the job went (not a stale log).
    io.write_text(log, f"crypto_lakehouse.remote: running on a node: {' '.join(command)}\n")
    with tempfile.TemporaryFile() as answer:
        # The answer goes to a file, not a pipe read after the end: a node's answer may be
        # larger than a pipe's buffer, and stdin is written while the node still reads.
        try:
            returncode, said = _run_srun(command, sent, answer)
        except OSError as exc:  # no srun here: say which config key names it
            return _failed(log, f"cannot start {srun[0]!r} (config key cluster.srun): {exc}", 127)
        answer.seek(0)
        try:
            # One folder fsync per folder for the whole answer, as a shard job's own writes.
            with io.deferred_dir_syncs():
                status = unpack_returned(answer, run_dir)
            io.write_json(
                layout.node_figures_path(log),
                {k: v for k, v in status.items() if k != "returncode"},
            )
        except (RemoteJobError, tarfile.TarError) as exc:
            reason = _slurm_reason(said, runtime_min=runtime_min, mem_mb=mem_mb)
            return _failed(
                log,
                f"{command[0]} exited {returncode}{_ended_by_signal(returncode)}"
                f"{reason}; no complete answer from the node ({exc}). "
                f"Command: {' '.join(command)}",
                returncode or 1,
                said,
            )
    return int(status["returncode"])


# srun's own lines on its stderr ("srun: error: …") and those it relays from the node's step
# daemon ("slurmstepd-NODE: error: *** STEP 12.0 ON NODE CANCELLED AT … DUE TO TIME
# LIMIT ***"): the only place that says why SLURM ended a job.
_SLURM_PREFIXES = ("srun:", "slurmstepd")
_SLURM_KEPT = 20
# "Detected 1 oom_kill event in StepId=…", "oom-kill", "task 0: Out Of Memory"
_OUT_OF_MEMORY = re.compile(r"oom[-_ ]?kill|out of memory", re.IGNORECASE)


def _run_srun(command: list[str], sent: bytes, answer) -> tuple[int, list[str]]:
    """Run ``command`` with ``sent`` on its stdin and its stdout into ``answer``; its stderr
    is passed on to ours line by line as it comes (srun's "queued and waiting" lines, the
    node job's own output), and srun's own lines among it are kept (the last
    ``_SLURM_KEPT``). Returns the exit status and those lines."""
    said: list[str] = []
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=answer, stderr=subprocess.PIPE)

    def relay() -> None:
        for raw in proc.stderr:
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            line = raw.decode(errors="replace").strip()
            if line.startswith(_SLURM_PREFIXES):
                said.append(line)
                del said[:-_SLURM_KEPT]

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        try:
            proc.stdin.write(sent)
        except BrokenPipeError:  # the node stopped reading: its status says why
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        returncode = proc.wait()
    except BaseException:  # as subprocess.run: no srun left behind by an interrupted launcher
        proc.kill()
        proc.wait()
        raise
    reader.join()
    return returncode, said


def _slurm_reason(said: list[str], *, runtime_min: int, mem_mb: int) -> str:
    """Why SLURM ended the job, from srun's lines, naming the limit and where it comes from;
    empty when they do not say."""
    text = "\n".join(said)
    if "DUE TO TIME LIMIT" in text:
        return (
            f"; SLURM: past its time limit (asked: --time={runtime_min} min, the rule's "
            "runtime; raise it with set-resources, docs/cluster.md)"
        )
    if _OUT_OF_MEMORY.search(text):
        return (
            f"; SLURM: out of memory (asked: --mem={mem_mb}M, the rule's mem_mb; raise it "
            "with set-resources, docs/cluster.md)"
        )
    if "CANCELLED" in text:
        line = next(ln for ln in reversed(said) if "CANCELLED" in ln)
        return f"; SLURM: {line}"
    return ""


def _ended_by_signal(returncode: int) -> str:
    """What an exit status says of a signal: srun (like a shell) exits 128 + N when its job
    step was ended by signal N, and a process killed here has -N. SIGTERM is what scancel
    and a time limit send; SIGKILL follows when the step does not stop, or comes from the
    out-of-memory killer. Empty for any other status."""
    import signal

    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if number not in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        return ""
    why = {
        signal.SIGTERM: "cancelled (scancel) or past its time limit",
        signal.SIGKILL: "killed: cancelled, past its time limit or out of memory",
        signal.SIGINT: "interrupted",
    }[number]
    return f" (ended by {signal.Signals(number).name}: {why})"


def _failed(log: str, problem: str, returncode: int, said: list[str] = ()) -> int:
    """A launch that got no answer: srun's own lines (``said``) in the job's log, and the
    reason at the end of the log and on stderr."""
    message = f"crypto_lakehouse.remote: {problem}\n"
    previous = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
    io.write_text(log, previous + "".join(f"{line}\n" for line in said) + message)
    sys.stderr.write(message)
    return returncode


# ------------------------------------------------------------------ node
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            st = path.stat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def changed_files(root: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Files below ``root`` the job created or rewrote (not the jobs lock, not temporaries)."""
    after = _snapshot(root)
    return sorted(
        rel
        for rel, sig in after.items()
        if before.get(rel) != sig
        and Path(rel).name not in _NOT_RETURNED
        and not Path(rel).name.startswith(_TEMP_PREFIX)
    )


def _job_figures(started: float) -> dict:
    """The finished job's wall time, CPU time and peak memory (this node process's children),
    with the node and SLURM job it ran on: Snakemake's benchmark table of a launched job
    measures only the launcher."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dict(
        s=round(time.monotonic() - started, 4),
        cpu_time=round(usage.ru_utime + usage.ru_stime, 4),
        max_rss=round(usage.ru_maxrss / 1024, 2),  # Linux: KiB -> MiB, as Snakemake's max_rss
        host=socket.gethostname(),
        slurm_job=os.environ.get("SLURM_JOB_ID"),
    )


def run_node(stdin, stdout) -> int:
    """On the node: unpack the job, run it in a private copy of its run-directory files,
    send back what it wrote and its exit status. Returns that status."""
    work = Path(tempfile.mkdtemp(prefix="crypto_lakehouse-job-"))
    try:
        local_run = work / "run"
        local_run.mkdir()

        def write(rel: str, data: bytes) -> None:
            target = local_run / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        meta = _read_stream(stdin, META, write, "the submit host")
        if meta is None:
            raise RemoteJobError("the job's bundle has no meta.json")
        before = _snapshot(local_run)
        run_dir, here = meta["run_dir"], str(local_run)
        job = rebase(meta["job"], run_dir, here)
        log = rebase(meta["log"], run_dir, here)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        # The log's first line says where the job ran; the job appends to it.
        where = f"{socket.gethostname()} (SLURM job {os.environ.get('SLURM_JOB_ID', '-')})"
        Path(log).write_text(f"crypto_lakehouse.remote: job on node {where}\n")
        # The job's stdout would corrupt the answer stream: it goes to stderr, with its
        # stderr, each line's paths into the private folder moved back to the run directory
        # (the job's error lines name its log: "traceback in RUN_DIR/logs/…", which the
        # user reads on the submit host; before 2026-12-06 they named the node's private
        # folder, removed when the job ends).
        started = time.monotonic()
        proc = subprocess.Popen(
            [meta["python"], meta["script"], json.dumps(job), log],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        for line in proc.stdout:
            sys.stderr.buffer.write(rebased_text(line, here, run_dir))
            sys.stderr.buffer.flush()
        proc.wait()
        status = dict(returncode=proc.returncode, **_job_figures(started))
        removed = sorted(rel for rel in before if not (local_run / rel).exists())
        if removed:
            status["removed"] = removed
        with tarfile.open(fileobj=stdout, mode="w|") as tar:
            for rel in changed_files(local_run, before):
                data = rebased_text((local_run / rel).read_bytes(), here, run_dir)
                _add_bytes(tar, FILES + rel, data)
            _add_bytes(tar, STATUS, json.dumps(status).encode())
        return proc.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crypto_lakehouse.remote")
    sub = parser.add_subparsers(dest="command", required=True)
    p_launch = sub.add_parser("launch", help="submit host: run a job on a node through srun")
    p_launch.add_argument("--srun", default="srun", help="the srun command (words, JSON list)")
    p_launch.add_argument("--srun-args", default="[]", help="extra srun options (JSON list)")
    p_launch.add_argument("--cpus", type=int, default=1)
    p_launch.add_argument("--mem-mb", type=int, default=2000)
    p_launch.add_argument("--runtime", type=int, default=30, help="minutes")
    p_launch.add_argument("job", nargs=4, metavar="PYTHON SCRIPT JOB_JSON LOG")
    p_node = sub.add_parser("node", help="on the node: run the job sent on stdin")
    # Informational (squeue, ps): the node never reads the submit host's run directory.
    p_node.add_argument("run_dir", help="the submit host's run directory")
    args = parser.parse_args(argv)
    if args.command == "node":
        return run_node(sys.stdin.buffer, sys.stdout.buffer)
    srun = json.loads(args.srun) if args.srun.startswith("[") else [args.srun]
    return launch(
        args.job,
        srun=srun,
        cpus=args.cpus,
        mem_mb=args.mem_mb,
        runtime_min=args.runtime,
        extra=json.loads(args.srun_args),
    )


if __name__ == "__main__":
    sys.exit(main())
