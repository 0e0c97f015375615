"""CPU of the Snakemake main process, and how much of it is our code (issue 11).

    python benchmarks/bench_main_process.py [--profile OUT.prof] -- SNAKEMAKE_ARGS...

Runs Snakemake's command line in this process (as ``python -m snakemake SNAKEMAKE_ARGS``
would), then prints the main process's CPU (user + system, every thread) and its children's
(the jobs: shells and scripts). With ``--profile``, the run is under cProfile (main thread
only; it inflates Python-heavy code) and the script also prints the main thread's profiled
time without lock waits (waiting for jobs), the parts that are Snakemake's own (parsing the
workflow files, ``utils.validate``) and our code's: the cumulative time of every function of
this repository called from outside it (input, params and resource functions, onstart,
onsuccess; the module level of the workflow files is listed apart, as it includes Snakemake's
own calls), top entries first.

Run it from the worktree with ``PYTHONPATH=$PWD`` against a data dir built by
``bench_vs_legacy.py --keep`` (see docs/benchmarks.md, issue 11, fifth part).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)


def ours(filename: str) -> bool:
    return filename.startswith(REPO) and "/benchmarks/" not in filename


def run_snakemake(args: list[str], profile: str | None) -> None:
    from snakemake.cli import main

    sys.argv = ["snakemake", *args]
    try:
        if profile:
            cProfile.runctx("main()", globals(), {"main": main}, profile)
        else:
            main()
    except SystemExit:  # Snakemake's main() always exits
        pass


def report_profile(path: str) -> None:
    stats = pstats.Stats(path).stats

    def cumulative(pred) -> float:
        return sum(v[3] for k, v in stats.items() if pred(k))

    total = sum(v[2] for v in stats.values())
    waits = cumulative(lambda k: k[2] == "<method 'acquire' of '_thread.lock' objects>")
    print(f"main thread, profiled: {total - waits:.3f} s (lock waits left out: {waits:.1f} s)")
    for name, module, function in [
        ("Snakemake: parsing the workflow files", "snakemake/parser.py", "parse"),
        ("Snakemake: utils.validate (config schema)", "snakemake/utils.py", "validate"),
        ("Snakemake: checkpoints.get", "snakemake/checkpoints.py", "get"),
    ]:
        seconds = cumulative(lambda k, m=module, f=function: k[0].endswith(m) and k[2] == f)
        print(f"  {name:<45} {seconds:.3f} s")
    entries = []
    for (filename, line, function), (_, calls, _, _, callers) in stats.items():
        if not ours(filename) or function == "<module>":
            continue
        outside = [c for c in callers if not ours(c[0])]
        seconds = sum(callers[c][3] for c in outside)
        if seconds:
            entries.append((seconds, calls, f"{Path(filename).name}:{line} {function}"))
    entries.sort(reverse=True)
    print(f"  our functions called by Snakemake (cumulative)  {sum(e[0] for e in entries):.3f} s")
    for seconds, calls, name in entries[:12]:
        print(f"    {seconds:.3f} s {calls:6d} calls  {name}")
    modules = [
        (v[3], Path(k[0]).name)
        for k, v in stats.items()
        if ours(k[0]) and k[2] == "<module>" and not k[0].endswith(".py")
    ]
    for seconds, name in sorted(modules, reverse=True)[:3]:
        print(f"  module level of {name} (with Snakemake's calls in it): {seconds:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", help="write a cProfile file here and summarise it")
    ap.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    snakemake_args = args.snakemake_args
    if snakemake_args[:1] == ["--"]:
        snakemake_args = snakemake_args[1:]
    run_snakemake(snakemake_args, args.profile)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"main process CPU: {own.ru_utime + own.ru_stime:.2f} s "
        f"(user {own.ru_utime:.2f}, system {own.ru_stime:.2f}); "
        f"children (jobs): {children.ru_utime + children.ru_stime:.2f} s",
        file=sys.stderr,
    )
    if args.profile:
        sys.stdout.flush()
        report_profile(args.profile)


if __name__ == "__main__":
    main()
