"""Which data dir the run dir's records describe.

Snakemake's outputs are the run dir's reports; the data files are side effects in
``data_dir``. When the run dir is not inside the data dir (config ``run_dir``, or the local
run dir of an ``s3://`` data dir), a data dir wiped or replaced by an empty one under an
intact run dir left Snakemake with "Nothing to be done" and a lakehouse without data.

The first run writes a small marker with a random id in the data dir
(``{data_dir}/lakehouse/data_dir_id.json``) and records it in the run dir. At every start
(the main process, once: one read of each) the two are compared:

- both there and equal: nothing to say;
- no record in the run dir (a first run, a new run dir, or an upgrade from a version
  without markers, whose data dir has none either): the marker is written if missing and
  recorded; nothing is rebuilt;
- a record, but the data dir's marker missing or different: the data dir was wiped or
  replaced. The run dir's records of the data (``reports/``, ``stats/``, ``summaries/``,
  ``report/``) are removed, as for a new run dir, so that every job runs again; the run
  says so in one line. A dry run only says what a real run would do (on a local data dir;
  a dry run sends an ``s3://`` data dir no request, and says nothing).

A data dir that is wiped before its first run with this version has no record to compare
with and is not detected here; ``data_presence`` finds it at that start from the run dir's
summaries (the stages whose summaries count files none of whose folders is there rerun).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from crypto_lakehouse import io, layout, storage

# The run dir's folders that describe the data dir's content (Snakemake's outputs and what
# is derived from them); listing/, exchange_info/, rest_budget/, stamps/, config_checks/,
# plan/ describe the remote or the config and stay.
DATA_RECORDS = ("reports", "stats", "summaries", "report")


def applies(data_dir: str, run_dir: str) -> bool:
    """Whether the run dir can outlive its data dir: not when it is ``{data_dir}/lakehouse``
    (wiping the data dir wipes the run dir too)."""
    if storage.is_remote(data_dir):
        return True
    return Path(run_dir).resolve() != Path(layout.lakehouse_dir(data_dir)).resolve()


def _marker_id(read, path) -> str | None:
    try:
        value = read(path)
    except (ValueError, UnicodeDecodeError):  # torn or foreign: not ours
        return "unreadable"
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return "unreadable"


def check(data_dir: str, run_dir: str, *, dry_run: bool) -> str | None:
    """Compare the data dir's marker with the run dir's record and act (see the module);
    returns the one line to print, or None. Raises OSError when a marker cannot be read or
    written (an S3 store that does not answer)."""
    if not applies(data_dir, run_dir):
        return None
    if dry_run and storage.is_remote(data_dir):
        return None  # a dry run sends the bucket no request (planning works offline)
    marker_path = layout.data_identity_path(data_dir)
    record_path = layout.run_identity_path(run_dir)
    marker = _marker_id(lambda p: storage.read_json(p, default=None), marker_path)
    record = _marker_id(io.read_json, record_path)  # the run dir: local
    if record is not None and marker == record:
        return None
    message = None
    if record is not None:
        found = {None: "has no marker", "unreadable": "holds an unreadable marker"}.get(
            marker, f"holds another marker (id {marker})"
        )
        message = (
            f"data dir {data_dir} {found} {storage.uri(marker_path)}"
            f", but run dir {run_dir} recorded id {record}: the data dir was wiped or replaced, "
            "and the run dir's records describe another one; "
            + (
                "a real run removes them (reports/, stats/, summaries/, report/) and rebuilds"
                if dry_run
                else "removed them (reports/, stats/, summaries/, report/): this run rebuilds"
            )
        )
    if dry_run:
        return message
    if record is not None:
        for name in DATA_RECORDS:
            run_records = Path(run_dir) / name
            shutil.rmtree(run_records, ignore_errors=True)  # seam: run dir (local) records
        # The data folders recorded for data_presence were the other data dir's as well.
        storage.delete(layout.data_folders_record_path(run_dir))
    if marker is None or marker == "unreadable":  # another data dir's marker is kept
        marker = uuid.uuid4().hex
        storage.write_json(marker_path, {"id": marker})
    io.write_json(record_path, {"id": marker, "data_dir": storage.uri(data_dir)})
    return message
