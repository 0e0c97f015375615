"""A shard job's file contract in miniature, for tests/unit/test_remote.py: reads each
symbol's upstream report and the file ``extra``, writes each symbol's report and stats, the
shard report and the log, then exits with ``exit_code`` (after ``fail_after`` symbols when
given, as a job whose last symbol broke), after ``sleep_s`` seconds when given. The upstream reports of the symbols in
``remove_upstream`` are removed first, as a job that found them torn does.

Usage: python fake_job.py JOB_JSON LOG_FILE
"""

import json
import sys
import time
from pathlib import Path

job, log = json.loads(sys.argv[1]), Path(sys.argv[2])
time.sleep(job.get("sleep_s", 0))  # a job still running, for a test that ends it from outside
log.parent.mkdir(parents=True, exist_ok=True)
with log.open("a") as f:  # appends, as the jobs' logging does
    f.write(f"fake job on {job['symbols']}\n")
extra = json.loads(Path(job["extra"]).read_text())
for symbol in job.get("remove_upstream", []):
    Path(job["symbol_paths"]["upstream_report"], f"{symbol}.json").unlink()
    job["symbols"].remove(symbol)
done = []
for n, symbol in enumerate(job["symbols"]):
    if job.get("fail_after") is not None and n >= job["fail_after"]:
        break
    paths = job["symbol_paths"]
    upstream = json.loads(Path(paths["upstream_report"], f"{symbol}.json").read_text())
    report = Path(paths["report_path"], f"{symbol}.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"symbol": symbol, "upstream": upstream, "extra": extra}))
    stats = Path(str(report).replace("/reports/", "/stats/"))
    stats.parent.mkdir(parents=True, exist_ok=True)
    stats.write_text(json.dumps({"symbol": symbol}))
    done.append(symbol)
    print(f"stdout of the job: {symbol}")  # must not reach the answer stream
print(f"stderr of the job: details in {log}", file=sys.stderr)
if len(done) == len(job["symbols"]):
    shard = Path(job["shard_report"])
    shard.parent.mkdir(parents=True, exist_ok=True)
    # As crypto_lakehouse.shards: each symbol's report by its path (the summary reads it).
    entries = {s: {"report": str(Path(job["symbol_paths"]["report_path"], f"{s}.json"))}
               for s in done}  # fmt: skip
    shard.write_text(json.dumps({"symbols": entries}))
with log.open("a") as f:
    f.write(f"done {done}; reports in {job['symbol_paths']['report_path']}\n")
sys.exit(job.get("exit_code", 0))
