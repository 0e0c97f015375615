# Shared set-up: config validation, path helpers and every input/params function.
# Rules live in the topic files; functions live here (snakemake --lint wants them apart).

import atexit
import hashlib
import json
import os
import sys

import crypto_lakehouse.data_identity as data_identity
import crypto_lakehouse.data_presence as data_presence
import crypto_lakehouse.datasets as dataset_registry
import crypto_lakehouse.io as data_io
import crypto_lakehouse.job_server as job_server
import crypto_lakehouse.layout as layout
import crypto_lakehouse.leftovers as leftovers
import crypto_lakehouse.lock as data_lock
import crypto_lakehouse.plan as plan
import crypto_lakehouse.reachability as reachability
import crypto_lakehouse.sizing as sizing
import crypto_lakehouse.slurm as slurm
import crypto_lakehouse.storage as storage_settings
from crypto_lakehouse.configuration import (
    check_user_config,
    duplicate_key_problem,
    fill_defaults,
    load_schema,
)
from crypto_lakehouse.intervals import DAY_MS, interval_ms
from snakemake.exceptions import WorkflowError

DRY_RUN = bool(getattr(workflow.output_settings, "dryrun", False))


def stop(message):
    """End the run while the workflow is read, with ``message`` on stderr and exit status
    1: a WorkflowError raised here came out as `WorkflowError in file ".../common.smk",
    line N:` and `File ...` lines around the message (a DataDirBusy: three of them), and a
    dry run printed it on stdout. Run by ``crypto-lakehouse workflow …``, the message begins
    with that command (``COMMAND_ENV`` of crypto_lakehouse.cli), as the command's own
    problems do; under ``snakemake`` it stands alone."""
    command = os.environ.get("CRYPTO_LAKEHOUSE_COMMAND")
    print(f"{command}: {message}" if command else message, file=sys.stderr)
    sys.exit(1)


# Jobs run their scripts with the interpreter that runs Snakemake (PYTHON below), never with
# a conda environment's: --sdm conda would build envs/pipeline.yaml per job (from a copy in
# .snakemake/conda/, where its `-e ../` names no project) and then not use it.
if "CONDA" in {m.name for m in workflow.deployment_settings.deployment_method}:
    stop(
        "--sdm conda (--use-conda) is not supported: every job runs with the Python that runs "
        "Snakemake. To use conda, run Snakemake from a conda environment instead: "
        "`conda env create -n crypto_lakehouse -f envs/pipeline.yaml` in a checkout, then "
        "`conda run -n crypto_lakehouse snakemake ...` (README, Packaging)"
    )
# Our check first: it names the key (closest valid key for a typo, the valid intervals) in a
# few lines and turns YAML dates into ISO strings; then the schema's defaults are filled as
# Snakemake's validate would (fill_defaults: without its second, pure-Python read of the
# schema; its own error would dump the whole schema).
# A key given twice in a config file: Snakemake's reading keeps the last value silently.
_FILE_PROBLEMS = [p for p in map(duplicate_key_problem, workflow.configfiles) if p]
_SCHEMA_PATH = f"{workflow.basedir}/config/config.schema.yaml"
try:
    if _FILE_PROBLEMS:
        raise plan.config_error(_FILE_PROBLEMS)
    _SCHEMA = load_schema(_SCHEMA_PATH)  # read once for both
    check_user_config(config, _SCHEMA_PATH, _SCHEMA)
    fill_defaults(config, _SCHEMA)
except plan.ConfigError as exc:
    stop(str(exc))

DATA = os.path.expanduser(config["data_dir"])  # "~/crypto_data/binance_data" as legacy
# The run directory: Snakemake's own files (reports, logs, benchmarks, listing, summaries,
# the report target, the run lock), always local; {DATA}/lakehouse unless config run_dir
# says otherwise or DATA is s3:// (docs/storage.md).
try:
    LH = layout.run_dir(DATA, config["run_dir"] and os.path.expanduser(config["run_dir"]))
except ValueError as exc:
    stop(str(exc))
# The features check (TA-Lib: ~0.5 s) runs once per features block; its verdict is kept in
# the run directory (a dry run only reads verdicts). With features.enabled: false it runs
# only when a features job is planned (check_features_when_disabled).
try:
    plan.check_config(config, layout.config_checks_dir(LH), remember_verdicts=not DRY_RUN)
except plan.ConfigError as exc:
    stop(str(exc))
except OSError as exc:  # the verdict's folder cannot be written
    stop(plan.unusable_folder(exc, DATA, LH))
# The main process reads and writes the lease of an S3 data dir with the jobs' settings.
storage_settings.configure(config["storage"])
# One run per data dir: the main process of a real run holds the run lock (and on S3 the
# lease object) until it exits and clears Snakemake locks a killed run left
# (crypto_lakehouse/lock.py).
try:
    RUN_LOCK = data_lock.hold_for_run(
        DATA,
        os.getcwd(),
        main_process=workflow.is_main_process,
        dry_run=DRY_RUN,
        run_dir=LH,
    )
except data_lock.DataDirBusy as exc:  # another run holds the data dir
    stop(str(exc))
except OSError as exc:  # the lock's folder cannot be written, the S3 store does not answer
    stop(plan.unusable_folder(exc, DATA, LH))
# A data dir wiped or replaced under an intact run dir: its records there describe another
# data dir; they are removed and the run rebuilds (crypto_lakehouse/data_identity.py). One
# read of the marker per start, by the main process; a dry run only says so.
if workflow.is_main_process:
    try:
        _IDENTITY_NOTICE = data_identity.check(DATA, LH, dry_run=DRY_RUN)
    except OSError as exc:  # the marker cannot be read or written
        stop(plan.unusable_folder(exc, DATA, LH))
    if _IDENTITY_NOTICE:
        print(_IDENTITY_NOTICE, file=sys.stderr)
INTERVAL = config["interval"]
KLINES = f"klines-{INTERVAL}"
TRADE_TYPES = list(config["trade_types"])
FUTURES = [t for t in TRADE_TYPES if t != "spot"]
START_DATE, END_DATE = plan.resolve_dates(
    config["start_date"], config["end_date"], config["lookback_days"]
)
if workflow.is_main_process and plan.date_range_notice(config, START_DATE, END_DATE):
    print(plan.date_range_notice(config, START_DATE, END_DATE), file=sys.stderr)
if workflow.is_main_process and plan.agg_klines_notice(config):
    print(plan.agg_klines_notice(config), file=sys.stderr)
API_URL = {
    "spot": config["endpoints"]["spot_api"],
    "um_futures": config["endpoints"]["um_api"],
    "cm_futures": config["endpoints"]["cm_api"],
}
RESAMPLE_TARGETS = {
    t: [
        {"interval": x["interval"], "offset_step": x["offset_step"]}
        for x in config["resample"]["targets"]
        if x["trade_type"] == t
    ]
    for t in TRADE_TYPES
}
# The datasets of target `datasets` (config `datasets:` beyond klines and funding) and
# the candles built from aggTrades (config `agg_klines:`), of every trade type.
CORE_DATASETS = ("klines", "funding")


def extra_dataset_tags(trade_type):
    """Tags of the datasets the config lists for the trade type beyond klines and funding
    (built by the `datasets` target)."""
    selected = (config.get("datasets") or {}).get(trade_type) or []
    return dataset_registry.extra_tags(selected, INTERVAL, CORE_DATASETS)


AGG_KLINES_MARKETS = plan.AGG_KLINES_MARKETS  # cm: quote volume needs the contract size


def agg_klines_plan():
    """(trade type, interval) pairs of target agg_klines: trade types listing aggTrades."""
    intervals = config.get("agg_klines", {}).get("intervals") or []
    for i in intervals:
        if DAY_MS % interval_ms(i):
            raise WorkflowError(f"agg_klines.intervals: {i!r} does not divide a day")
    return [
        (t, i)
        for t in TRADE_TYPES
        if t in AGG_KLINES_MARKETS and "aggTrades" in extra_dataset_tags(t)
        for i in intervals
    ]


# The stages' data folders of this config. A folder that held files after the last run and
# is gone (deleted by hand) reruns the jobs that write it: without this, their reports in
# the run dir made the next run say "Nothing to be done" (crypto_lakehouse/data_presence.py).
# One local read and a stat per recorded folder (on S3 a LIST each) per start; a wipe of
# the whole data dir is data_identity's (its records were removed: the record with them).
DATA_FOLDERS = data_presence.stage_folders(
    DATA,
    TRADE_TYPES,
    INTERVAL,
    resample_intervals={t: [x["interval"] for x in RESAMPLE_TARGETS[t]] for t in TRADE_TYPES},
    features=plan.features_enabled(config),
    use_monthly_klines=config["download"]["use_monthly_klines"],
    extra_datasets={t: extra_dataset_tags(t) for t in TRADE_TYPES},
    agg_klines_intervals={t: [i for tt, i in agg_klines_plan() if tt == t] for t in TRADE_TYPES},
)
if workflow.is_main_process:
    try:
        _PRESENCE_NOTICE = data_presence.check(DATA, LH, DATA_FOLDERS, dry_run=DRY_RUN)
    except OSError as exc:  # the S3 store does not answer, the record cannot be written
        stop(plan.unusable_folder(exc, DATA, LH))
    if _PRESENCE_NOTICE:
        print(f"crypto_lakehouse: {_PRESENCE_NOTICE}", file=sys.stderr)


def record_data_folders():
    """onsuccess / onerror (a run that ran jobs): record the stages' folders that hold
    files now, the next start's reference (crypto_lakehouse/data_presence.py). A store that
    does not answer leaves the last record (the next start checks against it)."""
    if DRY_RUN:
        return
    try:
        data_presence.record(DATA, LH, DATA_FOLDERS)
    except OSError as exc:
        print(f"crypto_lakehouse: data folders not recorded ({exc})", file=sys.stderr)


# Derived files a configuration change left (crypto_lakehouse/leftovers.py) are looked for
# only when the run directory has no record that the last look, for the same data dir,
# interval and symbols, found none: the look is a folder scan (on S3 a LIST paginated over
# every file), which before 2026-12-06 ran at every parse of this file.
LEFTOVERS_KEY = {
    t: leftovers.key(
        DATA,
        INTERVAL,
        plan.symbol_selection(config, t),
        layout.run_listing_index_path(LH, t, KLINES),
    )
    for t in TRADE_TYPES
}


def found_leftovers(kind, looked_for, scan):
    """``{trade type: leftovers of kind}`` (``scan(t)``) of the trade types ``looked_for(t)``
    (no resample targets, features disabled); the others may write such files again, and
    the next look scans (``leftovers.forget``)."""
    found = {}
    for t in TRADE_TYPES:
        if looked_for(t):
            found[t] = leftovers.checked(
                LH, kind, t, LEFTOVERS_KEY[t], lambda: scan(t), workflow.is_main_process
            )
        else:
            leftovers.forget(LH, kind, t)
    return found


# A trade type whose targets were all removed still runs its resample stage while its
# symbols have resampled files: each symbol's job removes them (it owns all of them), as it
# does for a single target removed; without it they would stay, stale, for loaders to read.
RESAMPLE_LEFTOVERS = found_leftovers(
    "resample",
    lambda t: not RESAMPLE_TARGETS[t],
    lambda t: plan.resampled_leftovers(DATA, t, plan.last_listed_symbols(config, t, LH)),
)
RESAMPLED_TRADE_TYPES = [t for t in TRADE_TYPES if RESAMPLE_TARGETS[t] or RESAMPLE_LEFTOVERS.get(t)]
if workflow.is_main_process and len(RESAMPLE_LEFTOVERS):
    print(
        plan.resample_skipped_notice(TRADE_TYPES, RESAMPLED_TRADE_TYPES, RESAMPLE_LEFTOVERS),
        file=sys.stderr,
    )
# With features.enabled: false, the feature files of the configured symbols (every interval),
# removed by a remove_leftovers job of target all; while enabled the features stage owns them.
FEATURES_LEFTOVERS = found_leftovers(
    "features",
    lambda t: not plan.features_enabled(config),
    lambda t: leftovers.feature_files(DATA, t, plan.last_listed_symbols(config, t, LH)),
)
# What earlier runs derived from the candles of another base interval (config interval
# changed), removed by a remove_leftovers job of target all.
INTERVAL_LEFTOVERS = found_leftovers(
    "interval",
    lambda t: True,
    lambda t: (
        leftovers.other_interval_symbols(DATA, t, INTERVAL, plan.last_listed_symbols(config, t, LH))
        if leftovers.built_other_intervals(LH, t, INTERVAL)
        else []
    ),
)
# Only target all removes them. The notice says so under every target: the Snakefile is
# read before Snakemake sets workflow.dag_settings, so the targets are not known here
# (a test of dag_settings.targets, before 2026-12-07, always saw none).
if workflow.is_main_process:
    for kind, found in (("features", FEATURES_LEFTOVERS), ("interval", INTERVAL_LEFTOVERS)):
        for t in TRADE_TYPES:
            if found.get(t):
                print(leftovers.notice(kind, t, found[t], INTERVAL), file=sys.stderr)
                leftovers.plan_removal(LH, kind, t)


wildcard_constraints:
    trade_type="spot|um_futures|cm_futures",
    symbol="[A-Z0-9_]+",
    dataset=dataset_registry.wildcard_pattern(),
    interval="[0-9]+[smhdw]",
    stage="|".join(plan.STAGES),
    shard="[0-9]+",


# Jobs run their script with the interpreter of the environment that runs Snakemake, so
# `/path/to/venv/bin/snakemake` works without activating the venv (cron, schedulers). It is a
# params value, so it must not depend on how Snakemake was started: `python`, `python3` and
# the `snakemake` entry point of one environment all give `{prefix}/bin/python3`.
_ENV_PYTHON = os.path.join(sys.prefix, "bin", "python3")
PYTHON = _ENV_PYTHON if os.path.exists(_ENV_PYTHON) else sys.executable

# The job server of a run that executes jobs here (config job_server; crypto_lakehouse/
# job_server.py): one process that imports the jobs' modules while the DAG is built and
# forks each local job from there. Not for dry runs or --lint (check_envvars is off only
# there); jobs on SLURM never use it. Ended by onsuccess/onerror, or at this process's exit
# (nothing to be done, an error before the run); it ends itself if this process dies.
JOB_SERVER = None
if (
    workflow.is_main_process
    and not DRY_RUN
    and getattr(workflow, "check_envvars", True)
    and config["job_server"]
    and not job_server.disabled()
):
    JOB_SERVER = job_server.start(LH, PYTHON)
    atexit.register(JOB_SERVER.stop)


def stop_job_server():
    """onsuccess / onerror: end the job server and remove its socket."""
    if JOB_SERVER is not None:
        JOB_SERVER.stop()


def job_python(wildcards, threads, resources):
    """Params function of the CPU rules: the interpreter of the job's script, or with
    cluster.launcher srun the launcher that runs it on a node (crypto_lakehouse.remote;
    docs/cluster.md), with the rule's threads, memory and runtime. A list is quoted word by
    word in the shell command. The default is exactly PYTHON: no recorded params change."""
    cluster = config["cluster"]
    if cluster["launcher"] == "local":
        return PYTHON
    return [
        PYTHON,
        "-m",
        "crypto_lakehouse.remote",
        "launch",
        f"--srun={json.dumps(cluster['srun'])}",
        f"--srun-args={json.dumps(cluster['srun_args'])}",
        f"--cpus={threads}",
        f"--mem-mb={resources.mem_mb}",
        f"--runtime={resources.runtime}",
        PYTHON,
    ]


# ------------------------------------------------------------------ paths
def script_path(rule_name):
    # The path is a params value, so it must be stable between runs (a source-cache path
    # would rerun every job every time).
    return os.path.join(workflow.basedir, "scripts", f"{rule_name}.py")


# storage.* settings other than the defaults, given to every job (key "storage" of its JSON;
# crypto_lakehouse.smk applies them): a default config adds nothing, so no job reruns.
STORAGE_SETTINGS = storage_settings.job_settings(config["storage"])


def args_digest(args_function, ignore=()):
    """Params function beside every ``job_json``/``shard_job_json`` param, a digest of
    the job's arguments (less ``CONNECTION_ARGS`` and ``ignore``), so that a config change
    that changes them (symbols, resample targets, indicators, dates, ...) reruns the job.
    Snakemake leaves params functions that take ``input`` or ``output`` ("derived" params,
    as the job JSON is) out of its records and of the params rerun trigger; this one takes
    the wildcards only and is recorded."""

    def digest(wildcards):
        shaping = _without_connection_args(args_function(wildcards), ignore)
        text = json.dumps(shaping, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return digest


def rerun_stamp(rule_name, *value_functions):
    """Input function of the jobs that start a daily update (listing, exchangeInfo, the
    download and REST shards) and of the gen_kline, resample and features shards (whose
    config, such as the indicators, reaches no earlier job): a small file holding the values of their rerun params
    (``value_functions``: the args digest, the listing refresh, the shard digest, the retry
    generation), rewritten at planning only when they change. Params are compared with
    Snakemake's records, kept in ``.snakemake/`` of the directory it runs from: from
    another clone, or on a moved data dir, there are none, and Snakemake took the existing
    outputs as up to date: the next end date listed and fetched nothing. A rewritten stamp
    is newer than the job's outputs, which reruns it by modification time, records or not;
    the later stages follow through their inputs. A stamp written for the first time is
    dated 1970: it is no news (an upgrade, or outputs written before stamps existed, rerun
    nothing); a job without outputs runs anyway."""

    def stamp(wildcards):
        values = [f(wildcards) for f in value_functions]
        key = ",".join(f"{k}={v}" for k, v in sorted(wildcards.items())) or "run"
        path = layout.rerun_stamp_path(LH, rule_name, key)
        first = not os.path.exists(path)
        if data_io.write_json_if_changed(path, values) and first:
            os.utime(path, (0, 0))
        return path

    return stamp


# How a job reaches its hosts, not what it builds: a changed endpoint (a mirror, a test
# server), concurrency, timeout, retry count or rate-limit share reruns nothing.
CONNECTION_ARGS = frozenset(
    ("archive_url", "listing_url", "api_url", "concurrency", "timeout_s", "max_retries",
     "weight_share", "rest_budget_dir")
)  # fmt: skip


def _without_connection_args(value, ignore=()):
    if isinstance(value, dict):
        return {
            k: _without_connection_args(v, ignore)
            for k, v in value.items()
            if k not in CONNECTION_ARGS and k not in ignore
        }
    if isinstance(value, list):
        return [_without_connection_args(v, ignore) for v in value]
    return value


def job_json(args_function):
    """Params function: the entry point's keyword arguments as one JSON string (the rule's
    args plus its named inputs and outputs), which scripts/<rule>.py receives as argv[1].

    Rules run their script through shell: rather than script: because Snakemake re-reads a
    script: file for every planned job; with ~17,000 jobs that alone cost a third of the
    planning time of the full universe.
    """

    def job(wildcards, input, output):
        kwargs = dict(args_function(wildcards))
        if STORAGE_SETTINGS:
            kwargs["storage"] = STORAGE_SETTINGS
        for source in (input, output):
            for key, value in source.items():
                if key == "stamp":  # the rerun stamp is Snakemake's, not the job's
                    continue
                kwargs[key] = str(value) if isinstance(value, str) else [str(v) for v in value]
        return json.dumps(kwargs, sort_keys=True)

    return job


def shard_job_json(args_function, retried=True):
    """Params function of a shard rule: the shard's arguments (``args_function``, which names
    the shard's symbols and per-symbol paths; see ``shard_args``) plus the rule's named
    outputs, as one JSON string. Each symbol's own files are derived from ``symbol_paths``;
    of the inputs the job gets the upstream shard reports (their unfinished symbols are
    skipped) and, when ``retried``, its shard report's retry generation (``shard_retry``):
    its failed symbols then end the job successfully, for the others' sake."""

    def job(wildcards, input, output):
        kwargs = dict(args_function(wildcards))
        if STORAGE_SETTINGS:
            kwargs["storage"] = STORAGE_SETTINGS
        for key, value in output.items():
            kwargs[key] = str(value)
        # Symbols an upstream shard did not finish are skipped (crypto_lakehouse.shards).
        kwargs["upstream_shard_reports"] = sorted(
            str(p) for p in input if layout.is_shard_report(p)
        )
        if retried:  # a job without a summary to report its failed symbols fails itself
            kwargs["retry_generation"] = plan.retry_generation(output.shard_report)
        return json.dumps(kwargs, sort_keys=True)

    return job


def shard_retry(stage, dataset=None):
    """Params function of a shard job, the retry generation of its shard report (``stage``;
    ``dataset``, a pattern as in the output; the REST shard has none). It takes the
    wildcards only, so Snakemake records it. A shard job with failed symbols ends
    successfully and records one more than it was given, so the next run sees a changed
    param and reruns the shard."""

    def retry(wildcards):
        if dataset is None:
            path = layout.api_shard_report_path(LH, wildcards.trade_type, wildcards.shard)
        else:
            tag = dataset.format(**dict(wildcards.items()))
            path = layout.shard_report_path(LH, stage, wildcards.trade_type, tag, wildcards.shard)
        return plan.retry_generation(path)

    return retry


def report_path(stage, trade_type, dataset, symbol):
    return layout.stage_report_path(LH, stage, trade_type, dataset, symbol)


def report_dir(stage, trade_type, dataset):
    """Directory of a stage's per-symbol reports (``{dir}/{symbol}.json``)."""
    return layout.stage_report_dir(LH, stage, trade_type, dataset)


def shard_report_path(stage, trade_type, dataset, shard):
    """Output of a shard job: each symbol's status and report path (docs/summaries.md)."""
    return layout.shard_report_path(LH, stage, trade_type, dataset, shard)


def listing_index_path(trade_type, dataset):
    return layout.run_listing_index_path(LH, trade_type, dataset)


# ------------------------------------------------------------------ symbols (checkpoint)
# Only the target-level functions (stage_reports) call checkpoints.get(): that is what makes
# Snakemake re-evaluate the DAG once the listings are written. Per-job functions read the
# same index files directly: a per-symbol job exists only after its listing was evaluated,
# and a .get() per job costs Snakemake a checkpoint update per job (planning 2,700 symbols
# went from 55 s to a few seconds without it).
def listed(trade_type, dataset):
    """Symbols kept by the listing checkpoint of (trade type, dataset): list_archive for
    every listing of the run (one job for all), list_archive_dataset for a dataset the
    config does not list (a target asked for by path)."""
    mend_unreadable_listing(listing_index_path(trade_type, dataset))
    if (trade_type, dataset) in RUN_LISTINGS:
        checkpoints.list_archive.get()
        index = listing_index_path(trade_type, dataset)
    else:
        index = checkpoints.list_archive_dataset.get(
            trade_type=trade_type, dataset=dataset
        ).output.out_index
    return plan.listed_symbols(index)


def mend_unreadable_listing(index):
    """A listing index that cannot be read is mended before its checkpoint is asked for
    (``plan.repair_index``: written again from the listing's copy, else removed). Before,
    planning failed at every run with a bare JSONDecodeError. A dry run changes nothing: it
    says so; nor does a job's own Snakemake process (SLURM), which plans after the main one."""
    if not workflow.is_main_process:
        return
    if DRY_RUN:
        problem = plan.unreadable_index(index)
        if problem is not None:
            # A dry run runs no job: stop() is safe (a WorkflowError came out as an
            # InputFunctionException with Wildcards and Traceback lines, seven File lines).
            stop(f"listing index {index} is unreadable ({problem}): a real run mends it")
        return
    done = plan.repair_index(index)
    if done is not None:
        print(f"crypto_lakehouse: {done}", file=sys.stderr)


def published(trade_type, dataset):
    """Whether the archive has ``dataset`` (a name or tag) for ``trade_type`` (the registry's
    markets: no spot funding, no spot mark price klines, ...)."""
    return trade_type in dataset_registry.get(dataset).markets


# The listings of list_archive: klines and (where published) funding of every trade type,
# then the other datasets its config lists (aggTrades, ...). One checkpoint for all: an input
# function that asks several checkpoints (the datasets summary asks every dataset of its
# trade type) was left with a placeholder input by Snakemake 9.27 when some of those
# listings were already written and their downstream jobs were not (a rerun after a kill or
# a failure): the summary ran with the listing's path as its input.
RUN_LISTINGS = [
    (t, d)
    for t in TRADE_TYPES
    for d in [KLINES, "funding", *extra_dataset_tags(t)]
    if published(t, d)
]


def indexed(trade_type, dataset):
    """The same symbols, read from the index the checkpoint already wrote."""
    if not published(trade_type, dataset):
        return []
    return plan.listed_symbol_set(listing_index_path(trade_type, dataset))


def kline_symbols(trade_type):
    return listed(trade_type, KLINES)


def archive_funding_symbols(trade_type):
    return listed(trade_type, "funding") if published(trade_type, "funding") else []


def funding_symbols(trade_type):
    """Q5 fixed: funding is fetched for every futures symbol with klines or archived funding."""
    return sorted(set(kline_symbols(trade_type)) | set(archive_funding_symbols(trade_type)))


# ------------------------------------------------------------------ shards
# Per-symbol work runs in one job per (stage, trade type, dataset, shard of symbols): the
# fixed cost of a job (process start, imports, scheduling, a SLURM submission) is paid once
# per shard. A symbol's shard is crc32(name) % shard_count(trade type) (shards.shard_of),
# the same in every stage, so shard k of a stage depends only on shard k of the stages before.
# Only non-empty shards exist. Dataset "funding" means the archived funding symbols, except
# in api_download, where it means every futures symbol with klines or archived funding (Q5).
# "auto" sizes the count per trade type from its kline listing and, for a run whose jobs run
# on this host, from the cores (plan.auto_shard_count, plan.auto_parallel). A SLURM job
# re-plans on its node with other cores: it reads the main process's pinned value.
SHARDS = config["shards"]


def _run_cores():
    try:
        return workflow.cores
    except WorkflowError:  # no --cores (a cluster run with --jobs)
        return None


AUTO_PARALLEL = plan.auto_parallel(
    layout.auto_parallel_path(LH),
    cores=_run_cores(),
    trade_types=len(TRADE_TYPES),
    main_process=workflow.is_main_process,
    write=workflow.is_main_process and not DRY_RUN,
)


def shard_count(trade_type, dataset=KLINES):
    """The shard count of a trade type's dataset. Klines and funding share the kline
    listing's count (shard k of funding pairs with shard k of klines); the extra datasets
    (`datasets` target) have their own listing's."""
    if SHARDS != "auto":
        return int(SHARDS)
    basis = KLINES if dataset == "funding" else dataset
    index = listing_index_path(trade_type, basis)
    if not os.path.exists(index):  # a target-level call before that listing ran
        listed(trade_type, basis)
    return plan.auto_shard_count(index, parallel=AUTO_PARALLEL)


def _index_shards(trade_type, dataset):
    if not published(trade_type, dataset):
        return {}
    count = shard_count(trade_type, dataset)
    return plan.index_shards(listing_index_path(trade_type, dataset), count)


def shard_symbols(trade_type, shard, dataset=KLINES, stage=None):
    """Symbols of one shard (sorted), read from the listing index without a checkpoint
    call: for input and params functions of shard jobs, which exist only once the
    listing was evaluated."""
    shard = int(shard)
    symbols = _index_shards(trade_type, dataset).get(shard, [])
    if stage == "api_download" and dataset == "funding":
        klines = _index_shards(trade_type, KLINES).get(shard, [])
        symbols = sorted(set(symbols) | set(klines))
    return symbols


def shard_ids(trade_type, dataset=KLINES, stage=None):
    """The non-empty shards of (trade type, dataset), after the listing checkpoints: for
    target-level functions (they make Snakemake wait for the listing)."""
    if not published(trade_type, dataset):
        return []
    listed(trade_type, dataset)
    if stage == "api_download" and dataset == "funding":
        listed(trade_type, KLINES)
        return sorted(
            set(_index_shards(trade_type, dataset)) | set(_index_shards(trade_type, KLINES))
        )
    return list(_index_shards(trade_type, dataset))


def shard_mem_mb(mb_per_job, mb_per_symbol=1000, dataset=None):
    """Resource function: a shard job's memory (MB, for SLURM). On object storage a job
    works on ``storage.symbols_at_once`` symbols at the same time (docs/storage.md), each
    with its own working set; locally one at a time. ``dataset``: the shard's dataset tag
    when the wildcards do not give it (default: ``wildcard_tag``)."""
    at_once = storage_settings.symbols_at_once(DATA)

    def mem_mb(wildcards):
        if at_once == 1:
            return mb_per_job
        tag = dataset or wildcard_tag(wildcards)
        n = len(shard_symbols(wildcards.trade_type, wildcards.shard, tag))
        return mb_per_job + mb_per_symbol * (min(at_once, n) - 1)

    return mem_mb


def shard_records(stage, upstream_stage, wildcards, dataset=None, own_tag=None):
    """What the resource functions of a shard job read from the run directory: its symbols,
    the archive bytes per symbol of its upstream shard report (``upstream_stage``) and of its
    own previous one (``sizing.done_bytes``), and the listing index's bytes of the symbols
    the upstream report gives none (before that job ran). Missing or old records give none."""
    tt, shard = wildcards.trade_type, wildcards.shard
    tag = dataset or wildcard_tag(wildcards)
    own = own_tag(wildcards) if own_tag else tag
    symbols = shard_symbols(tt, shard, tag)
    upstream = sizing.done_bytes(shard_report_path(upstream_stage, tt, tag, shard))
    done = sizing.done_bytes(shard_report_path(stage, tt, own, shard))
    listed = {}
    index = listing_index_path(tt, tag)
    if any(upstream.get(s) is None for s in symbols) and os.path.exists(index):
        listed = sizing.listed_bytes(plan.load_index(index), symbols)
    return symbols, upstream, done, listed, own


# The jobs whose runtime the cap clamped in this run: one warning line when it ends
# (warn_clamped_runtimes, onsuccess and onerror).
RUNTIME_CLAMPS = sizing.RuntimeClamps()


def warn_clamped_runtimes():
    """onsuccess / onerror: one line naming the jobs whose runtime request
    cluster.max_runtime_minutes clamped, if any (a job SLURM then ends at that limit
    would not say it asked for more)."""
    line = RUNTIME_CLAMPS.warning()
    if line:
        print(line, file=sys.stderr)


def archive_runtime(
    minutes_per_symbol,
    stage,
    upstream_stage,
    dataset=None,
    own_tag=None,
    mb_per_minute=sizing.ARCHIVE_MB_PER_MINUTE,
):
    """Resource function of the jobs that read archives or what was parsed from them (the
    parse rules, the candle stages): 10 min + ``minutes_per_symbol`` per symbol + 1 min per
    ``mb_per_minute`` MB of archives the shard has still to work through
    (crypto_lakehouse.sizing, docs/cluster.md): the bytes its upstream shard report
    (``upstream_stage``; before that job ran, the listing index) records per symbol, less
    those its own previous shard report records as done. ``dataset``: the shard's dataset
    tag when the wildcards do not give it; ``own_tag``: the tag of the job's own report
    (function of the wildcards; default: ``dataset``)."""

    def runtime(wildcards, attempt):
        symbols, upstream, done, listed, own = shard_records(
            stage, upstream_stage, wildcards, dataset, own_tag
        )
        pending = sizing.pending_bytes(symbols, upstream, done, listed)
        factor = retry_factor(stage, wildcards, own, attempt)
        minutes = sizing.runtime_minutes(
            len(symbols),
            minutes_per_symbol,
            pending,
            mb_per_minute=mb_per_minute,
            factor=factor,
        )
        job = f"{stage} {wildcards.trade_type}/{own} shard {wildcards.shard}"
        return RUNTIME_CLAMPS.limit(job, minutes, config["cluster"]["max_runtime_minutes"])

    return runtime


def candle_runtime(stage, upstream_stage):
    """Resource function of the gen_kline, resample and features shards: ``archive_runtime``
    with the candle stages' per-symbol minutes and rate (``sizing.CANDLE_*``): a daily update
    asks for its new days, a first build for the symbol's whole history."""
    return archive_runtime(
        sizing.CANDLE_MINUTES_PER_SYMBOL,
        stage,
        upstream_stage,
        mb_per_minute=sizing.CANDLE_MB_PER_MINUTE,
    )


def candle_mem_mb(stage, upstream_stage):
    """Resource function: a candle shard's memory (MB, for SLURM) grows with the history of
    the largest symbols it builds whole (no tail build: not completed by its last run; the
    features' tail builds too, less), as many as it works on at once
    (``storage.symbols_at_once``); ``sizing.candle_mem_mb``."""
    at_once = storage_settings.symbols_at_once(DATA)

    def mem_mb(wildcards, attempt):
        symbols, upstream, done, listed, own = shard_records(stage, upstream_stage, wildcards)
        full, tail = sizing.history_bytes(symbols, upstream, done, listed)
        factor = retry_factor(stage, wildcards, own, attempt)
        return sizing.candle_mem_mb(stage, full, tail, min(at_once, max(1, len(symbols))), factor)

    return mem_mb


def parse_klines_mem_mb():
    """Resource function of the kline parses (aws_parse_klines, aws_parse_kline_layout): a
    constant per symbol worked on at once (``storage.symbols_at_once``), twice after an
    unfinished attempt; ``sizing.parse_klines_mem_mb``."""
    at_once = storage_settings.symbols_at_once(DATA)

    def mem_mb(wildcards, attempt):
        tag = wildcard_tag(wildcards)
        n = len(shard_symbols(wildcards.trade_type, wildcards.shard, tag))
        factor = retry_factor("aws_parse", wildcards, tag, attempt)
        return sizing.parse_klines_mem_mb(min(at_once, max(1, n)), factor)

    return mem_mb


def retry_factor(stage, wildcards, tag, attempt):
    """``sizing.retry_factor``: Snakemake's ``attempt`` (``--retries``), at least
    ``sizing.UNFINISHED_FACTOR`` when the job's previous attempt started and did not finish
    (its log without its shard report: SLURM ended it past its time limit)."""
    tt, shard = wildcards.trade_type, wildcards.shard
    unfinished = sizing.unfinished_attempt(
        layout.shard_log_path(LH, stage, tt, tag, shard), shard_report_path(stage, tt, tag, shard)
    )
    return sizing.retry_factor(attempt, unfinished)


def wildcard_tag(wildcards):
    """The dataset tag of a job: its ``{dataset}`` wildcard, or built from the dataset and
    interval wildcards of the parse rules (no interval and no dataset: funding)."""
    names = wildcards.keys()
    if "dataset" in names:
        return wildcards.dataset
    name = next((wildcards[k] for k in ("tick_dataset", "kline_dataset") if k in names), None)
    if name is None:
        name = "klines" if "interval" in names else "funding"
    interval = wildcards.interval if "interval" in names else None
    return dataset_registry.tag(name, interval)


def shard_args(stage, wildcards, dataset, **symbol_dirs):
    """The shard part of a job's arguments: its symbols and per-symbol path directories
    (``report_path`` in the stage's report directory, plus ``symbol_dirs``)."""
    symbols = shard_symbols(wildcards.trade_type, wildcards.shard, dataset, stage)
    paths = {"report_path": report_dir(stage, wildcards.trade_type, dataset), **symbol_dirs}
    return dict(shard=int(wildcards.shard), symbols=symbols, symbol_paths=paths)


# ------------------------------------------------------------------ aws_download
def get_listing_args(wildcards):
    return listing_args(wildcards.trade_type, wildcards.dataset)


def get_run_listings_args(wildcards):
    """list_archive's arguments: each listing's arguments and index path."""
    listings = [
        dict(listing_args(t, d), out_index=listing_index_path(t, d)) for t, d in RUN_LISTINGS
    ]
    return dict(listings=listings)


def listing_args(trade_type, dataset):
    entry, interval = dataset_registry.split_tag(dataset)
    return dict(
        trade_type=trade_type,
        dataset=entry.name,
        interval=interval or INTERVAL,
        symbols=plan.symbol_selection(config, trade_type),
        listing_url=config["endpoints"]["listing"],
        details_dir=layout.run_listing_details_dir(LH, trade_type, dataset),
        include_monthly=config["download"]["use_monthly_klines"],
        concurrency=config["download"]["listing_concurrency"],
        timeout_s=config["download"]["timeout_s"],
        max_retries=config["download"]["max_retries"],
        # Recorded in the index: `crypto_lakehouse plan` reuses an index listed for its end date.
        end_date=END_DATE,
        full_listing_every_days=config["download"]["full_listing_every_days"],
    )


def get_exchange_info_refresh(wildcards):
    """exchangeInfo is asked once per end date, and again after a failed request (its
    time is part of the value until a complete answer follows; rest/exchange_info.py)."""
    failed_at = plan.failure_time([exchange_info_path(t) for t in TRADE_TYPES], END_DATE)
    return END_DATE if failed_at is None else f"{END_DATE} ask again after {failed_at}"


def get_listing_refresh(wildcards):
    """The archive grows daily: a new end date re-lists (a changed value reruns the
    checkpoint). A fixed end date re-lists once a day until the archive has published its
    last days (``plan.listing_recheck``). So does a listing with failed symbols: the time of
    the failure is part of the value, so each run after a failed listing lists again; the
    complete index that follows carries that time, so the run after it does not."""
    monthly_only = plan.monthly_files_only(d for _, d in RUN_LISTINGS)
    recheck = plan.listing_recheck(config["end_date"], END_DATE, monthly_only)
    value = END_DATE if recheck is None else f"{END_DATE} recheck {recheck}"
    failed_at = plan.failure_time([listing_index_path(t, d) for t, d in RUN_LISTINGS], END_DATE)
    return value if failed_at is None else f"{value} relist after {failed_at}"


def get_shard_digest(wildcards):
    """Digest of the listing digests of the shard's symbols and of an explicit end date
    that cuts their listed files (rerun trigger of a download)."""
    index = listing_index_path(wildcards.trade_type, wildcards.dataset)
    symbols = shard_symbols(wildcards.trade_type, wildcards.shard, wildcards.dataset)
    return plan.shard_digest(index, symbols, config["end_date"])


def get_download_priority(wildcards):
    """Priority of a download shard job: its symbols' listed files (plan.shard_files); the
    largest jobs take the archive_http slots first."""
    index = listing_index_path(wildcards.trade_type, wildcards.dataset)
    symbols = shard_symbols(wildcards.trade_type, wildcards.shard, wildcards.dataset)
    return plan.shard_files(index, symbols)


def get_download_args(wildcards):
    entry, interval = dataset_registry.split_tag(wildcards.dataset)
    dl = config["download"]
    shard = shard_args(
        "aws_download",
        wildcards,
        wildcards.dataset,
        details_path=layout.run_listing_details_dir(LH, wildcards.trade_type, wildcards.dataset),
    )
    # Symbols whose listing failed (a sparse per-symbol value): their download fails. Absent
    # when there are none, so that the arguments (a rerun trigger) stay what they were.
    errors = plan.listing_errors(
        listing_index_path(wildcards.trade_type, wildcards.dataset), shard["symbols"]
    )
    if errors:
        shard["symbol_values"] = {"listing_error": errors}
    return dict(
        shard,
        trade_type=wildcards.trade_type,
        dataset=entry.name,
        interval=interval or INTERVAL,
        data_dir=DATA,
        archive_url=config["endpoints"]["archive"],
        # Only an explicit end date limits downloads: "today" would rerun every shard daily,
        # while the listing digest already reruns exactly the shards with new files.
        start_date=START_DATE,
        end_date=config["end_date"],
        use_monthly_klines=dl["use_monthly_klines"],
        concurrency=dl["concurrency"],
        max_retries=dl["max_retries"],
        timeout_s=dl["timeout_s"],
    )


# ------------------------------------------------------------------ aws_parse
def get_parse_input(wildcards):
    dataset = "funding" if "interval" not in wildcards.keys() else f"klines-{wildcards.interval}"
    tt = wildcards.trade_type
    return {"download_shard": shard_report_path("aws_download", tt, dataset, wildcards.shard)}


def get_parse_args(wildcards):
    dataset = "funding" if "interval" not in wildcards.keys() else f"klines-{wildcards.interval}"
    tt = wildcards.trade_type
    args = shard_args(
        "aws_parse", wildcards, dataset, download_report=report_dir("aws_download", tt, dataset)
    )
    args.update(trade_type=tt, data_dir=DATA)
    args.update(config["parse"])  # max_inflate_ratio, max_inflated_bytes
    if "interval" in wildcards.keys():
        args["interval"] = wildcards.interval
    return args


# ------------------------------------------------------------------ api_download
def exchange_info_path(trade_type):
    return layout.exchange_info_path(LH, trade_type)


def api_shard_report_path(trade_type, shard):
    """Output of a REST shard job (klines and funding of the shard's symbols)."""
    return layout.api_shard_report_path(LH, trade_type, shard)


def api_shard_ids(trade_type):
    """REST shards: those of the kline symbols, and for futures of the funding symbols (every
    futures symbol with klines or archived funding, Q5)."""
    if not published(trade_type, "funding"):
        return shard_ids(trade_type, KLINES)
    return shard_ids(trade_type, "funding", "api_download")


def get_api_input(wildcards):
    tt, shard = wildcards.trade_type, wildcards.shard
    inputs = {"exchange_info_path": exchange_info_path(tt)}
    if shard_symbols(tt, shard, KLINES):
        inputs["parse_klines"] = shard_report_path("aws_parse", tt, KLINES, shard)
    if published(tt, "funding") and shard_symbols(tt, shard, "funding"):
        inputs["parse_funding"] = shard_report_path("aws_parse", tt, "funding", shard)
    return inputs


def get_api_args(wildcards):
    """The REST shard job's arguments: its klines part and (futures) its funding part, each
    with its symbols and per-symbol paths (rest.host.run_host_shard)."""
    rest = config["rest"]
    tt = wildcards.trade_type
    klines = shard_args(
        "api_download", wildcards, KLINES, parse_report=report_dir("aws_parse", tt, KLINES)
    )
    args = dict(
        shard=klines.pop("shard"),
        klines=klines,
        interval=INTERVAL,
        trade_type=tt,
        data_dir=DATA,
        api_url=API_URL[tt],
        exchange_info_path=exchange_info_path(tt),
        end_date=END_DATE,
        weight_share=rest["weight_share"],
        max_retries=rest["max_retries"],
        timeout_s=rest["timeout_s"],
        # The host's jobs running at once share its rate-limit windows (rest.limiter).
        rest_budget_dir=layout.rest_budget_dir(LH),
    )
    if published(tt, "funding"):
        funding = shard_args(
            "api_download",
            wildcards,
            "funding",
            parse_report=report_dir("aws_parse", tt, "funding"),
        )
        del funding["shard"]
        # Funding is fetched from the run's first day at the earliest; klines fill from the
        # first archived day instead (docs/config.md, Dates), so only futures jobs get it.
        args["start_date"] = START_DATE
        archived = set(shard_symbols(tt, wildcards.shard, "funding"))
        # Symbols without archived funding have no parse report (a sparse per-symbol value).
        funding["symbol_values"] = {
            "parse_report": {s: None for s in funding["symbols"] if s not in archived}
        }
        args["funding"] = funding
    return args


def get_exchange_info_args(wildcards):
    """The exchange_info job's arguments: one request per trade type of the run."""
    fetches = [
        dict(
            trade_type=t,
            api_url=API_URL[t],
            out_path=exchange_info_path(t),
            timeout_s=config["rest"]["timeout_s"],
        )
        for t in TRADE_TYPES
    ]
    return dict(fetches=fetches)


def get_exchange_info_job_args(wildcards):
    """The job's arguments: those above, the failure the files it replaces hold, and the
    trade types it keeps rather than asks again (after a failure of this end date and
    arguments, the complete ones: plan.exchange_info_kept)."""
    paths = {t: exchange_info_path(t) for t in TRADE_TYPES}
    previous = plan.failure_time(list(paths.values()), replaced=True)
    after_failure = plan.after_failure(previous, END_DATE)
    asked_for = dict(end_date=str(END_DATE), args=args_digest(get_exchange_info_args)(wildcards))
    return dict(
        get_exchange_info_args(wildcards),
        after_failure=after_failure,
        asked_for=asked_for,
        keep=plan.exchange_info_kept(paths, asked_for),
    )


# ------------------------------------------------------------------ gen_kline
def get_gen_input(wildcards):
    tt, shard = wildcards.trade_type, wildcards.shard
    inputs = {
        "parse_klines": shard_report_path("aws_parse", tt, KLINES, shard),
        "api_shard": api_shard_report_path(tt, shard),  # klines and funding
    }
    if tt != "spot" and config["generate"][tt]["with_funding_rates"]:
        if shard_symbols(tt, shard, "funding"):
            inputs["parse_funding"] = shard_report_path("aws_parse", tt, "funding", shard)
    if tt == "cm_futures":
        inputs["exchange_info"] = exchange_info_path(tt)
    return inputs


def get_gen_args(wildcards):
    tt = wildcards.trade_type
    opts = config["generate"][tt]
    args = shard_args("gen_kline", wildcards, f"klines-{wildcards.interval}")
    overrides = {
        s: config["contract_sizes"][s] for s in args["symbols"] if s in config["contract_sizes"]
    }
    args.update(
        symbol_values={"contract_size_override": overrides},
        exchange_info=exchange_info_path(tt) if tt == "cm_futures" else None,
        trade_type=tt,
        interval=wildcards.interval,
        data_dir=DATA,
        split_gaps=opts["split_gaps"],
        with_vwap=opts["with_vwap"],
        with_funding_rates=opts["with_funding_rates"] and tt != "spot",
        min_days=opts["min_days"],
        min_price_chg=opts["min_price_chg"],
    )
    return args


# ------------------------------------------------------------------ resample
def get_resample_args(wildcards):
    tt = wildcards.trade_type
    dataset = f"klines-{wildcards.interval}"
    args = shard_args(
        "resample", wildcards, dataset, gen_report=report_dir("gen_kline", tt, dataset)
    )
    args.update(
        trade_type=tt,
        interval=wildcards.interval,
        data_dir=DATA,
        targets=RESAMPLE_TARGETS[tt],
        aggregations=config["resample"]["aggregations"],
    )
    return args


# ------------------------------------------------------------------ features
FEATURES_CHECKED = []  # check_features_when_disabled ran (once per process)


def check_features_when_disabled():
    """The features check plan.check_config leaves out with features.enabled: false, for
    a features job planned all the same (`snakemake features`, a features file asked for):
    a block TA-Lib refuses, or TA-Lib missing, is named before any job runs."""
    if plan.features_enabled(config) or FEATURES_CHECKED:
        return
    # Feature files will be written again: the next run with `all` looks for them (leftovers).
    for t in TRADE_TYPES:
        leftovers.forget(LH, "features", t)
    try:
        plan.check_feature_config(
            config, layout.config_checks_dir(LH), remember_verdicts=not DRY_RUN
        )
    except plan.ConfigError as exc:
        # Called while the DAG is first built (the `features` target's input, or a features
        # job asked for by path), before any job runs: stop() is safe. A WorkflowError came
        # out as an InputFunctionException with Wildcards and Traceback lines.
        stop(str(exc))
    FEATURES_CHECKED.append(True)


def get_features_target_input(wildcards):
    check_features_when_disabled()
    return summaries("features")


def get_features_input(wildcards):
    check_features_when_disabled()
    tt, shard, dataset = wildcards.trade_type, wildcards.shard, f"klines-{wildcards.interval}"
    inputs = {"gen_shard": shard_report_path("gen_kline", tt, dataset, shard)}
    if RESAMPLE_TARGETS[tt]:
        inputs["resample_shard"] = shard_report_path("resample", tt, dataset, shard)
    if tt == "cm_futures":
        inputs["exchange_info"] = exchange_info_path(tt)
    return inputs


def get_features_args(wildcards):
    tt, dataset = wildcards.trade_type, f"klines-{wildcards.interval}"
    dirs = {"gen_report": report_dir("gen_kline", tt, dataset)}
    if RESAMPLE_TARGETS[tt]:
        dirs["resample_report"] = report_dir("resample", tt, dataset)
    args = shard_args("features", wildcards, dataset, **dirs)
    features = config["features"]
    args.update(
        trade_type=tt,
        interval=wildcards.interval,
        data_dir=DATA,
        indicators=features["indicators"],
        windows=features["microstructure"]["windows"],
    )
    if tt == "cm_futures":
        overrides = {
            s: config["contract_sizes"][s] for s in args["symbols"] if s in config["contract_sizes"]
        }
        args.update(
            exchange_info=exchange_info_path(tt),
            symbol_values={"contract_size_override": overrides},
        )
    return args


# ------------------------------------------------------------------ leftovers
def get_leftovers_args(wildcards):
    kind, tt = wildcards.kind, wildcards.trade_type
    if kind == "features":
        found = sorted(
            {
                layout.parse_segment_name(f.rsplit("/", 1)[-1])[0]
                for f in FEATURES_LEFTOVERS.get(tt, [])
            }
        )
    else:
        found = INTERVAL_LEFTOVERS.get(tt, [])
    return dict(kind=kind, trade_type=tt, data_dir=DATA, found=found, run_dir=LH)


def leftovers_removals():
    """Input of target all: a remove_leftovers job per kind and trade type with leftovers."""
    return [
        layout.leftovers_report_path(LH, kind, t)
        for kind, found in (("features", FEATURES_LEFTOVERS), ("interval", INTERVAL_LEFTOVERS))
        for t in TRADE_TYPES
        if found.get(t)
    ]


# ------------------------------------------------------------------ targets and summaries
def stage_reports(stage, trade_type):
    """Every shard report of one stage and trade type (each lists its symbols' reports)."""
    # Both listings of the trade type are evaluated before any shard job is planned (one
    # list_archive job lists them all; until it ran, the first .get() stops this function).
    kline_symbols(trade_type)
    archive_funding_symbols(trade_type)
    if stage == "resample" and trade_type not in RESAMPLED_TRADE_TYPES:
        return []
    if stage == "api_download":
        return [api_shard_report_path(trade_type, shard) for shard in api_shard_ids(trade_type)]
    if stage in ("aws_download", "aws_parse"):
        sets = [d for d in (KLINES, "funding") if published(trade_type, d)]
    else:
        sets = [KLINES]
    return [
        shard_report_path(stage, trade_type, dataset, shard)
        for dataset in sets
        for shard in shard_ids(trade_type, dataset, stage)
    ]


def summary_stage(wildcards):
    """The stage of a summary job (rule summarize_resample has no wildcard)."""
    return wildcards.get("stage", "resample")


def summary_trade_types(stage):
    return RESAMPLED_TRADE_TYPES if stage == "resample" else TRADE_TYPES


def get_summary_args(wildcards):
    """One summary per trade type of the stage, each with its trade type's shard reports."""
    stage = summary_stage(wildcards)
    summaries = [
        dict(
            stage=stage,
            trade_type=t,
            summary=layout.run_summary_path(LH, stage, t),
            reports=stage_reports(stage, t),
            # A failed listing with no symbol to fail (a first listing of "all") fails it.
            listings=[
                listing_index_path(t, d)
                for d in (KLINES, "funding")
                if stage == "aws_download" and published(t, d)
            ],
            # A failed exchangeInfo request is named in the REST stage's summary.
            exchange_info=exchange_info_path(t) if stage == "api_download" else None,
        )
        for t in summary_trade_types(stage)
    ]
    return dict(summaries=summaries)


def get_summary_input(wildcards):
    stage = summary_stage(wildcards)
    return [r for t in summary_trade_types(stage) for r in stage_reports(stage, t)]


# Stages of target "all" (features only while features.enabled).
ACTIVE_STAGES = plan.active_stages(config)


def summaries(stage):
    """The run summaries of a stage; resample only for trade types with resample targets
    (or resampled files left by removed ones: RESAMPLE_LEFTOVERS)."""
    trade_types = RESAMPLED_TRADE_TYPES if stage == "resample" else TRADE_TYPES
    return [layout.run_summary_path(LH, stage, t) for t in trade_types]


def get_resample_target_input(wildcards):
    # An explicit `resample` target with nothing to resample is an error, not an empty success.
    # Called while the DAG is first built, before any job or lock: stop() is safe here (a
    # WorkflowError came out as an InputFunctionException with Traceback lines).
    if not any(RESAMPLE_TARGETS.values()):
        stop(plan.no_resample_targets_message(TRADE_TYPES))
    return summaries("resample")


# ------------------------------------------------------------------ run start and end
def check_launcher():
    """onstart: cluster.launcher srun sends each CPU job to a node itself, so it needs the
    local executor (the executor is known only once the run starts, not while parsing).
    And a warning when the local executor would run far more CPU jobs here than this host
    has CPUs: profiles/slurm-srun's `cores: 100` with the config key forgotten."""
    launcher = config["cluster"]["launcher"]
    if launcher == "srun" and not workflow.local_exec:
        print(
            "config key 'cluster.launcher': srun launches the CPU jobs on nodes itself; run "
            "it with Snakemake's local executor (profiles/slurm-srun), not a cluster executor "
            "(profiles/slurm goes with launcher: local; docs/cluster.md)",
            file=sys.stderr,
        )
        sys.exit(1)
    cores, cpus = workflow.resource_settings.cores, os.cpu_count() or 1
    many = isinstance(cores, int) and cores > 4 * cpus
    if launcher == "local" and workflow.local_exec and many:
        print(
            f"warning: --cores {cores} with cluster.launcher: local runs up to {cores} CPU "
            f"jobs on this host ({cpus} CPUs); for SLURM nodes without a shared file system "
            "set cluster.launcher: srun in the config (docs/cluster.md)",
            file=sys.stderr,
        )


def check_slurm_status_command():
    """onstart: the SLURM executor asking job states with sacct on a cluster without an
    accounting database waits for ever after its first job, and with squeue on a cluster
    whose MinJobAge is short it does too, or may; stop (or warn) here saying what to do
    (crypto_lakehouse.slurm). One `scontrol show config` for both."""
    executor = getattr(workflow.executor_plugin, "name", None)
    settings = workflow.executor_settings
    status_command = getattr(settings, "status_command", None)
    if executor != "slurm" or status_command not in ("sacct", "squeue"):
        return
    found = slurm.start_check(
        executor, status_command, getattr(settings, "init_seconds_before_status_checks", None)
    )
    if found and found[0]:
        stop(found[1])
    if found:
        print(found[1], file=sys.stderr)


# The rules that talk to Binance: each holds one of the request budgets.
NETWORK_RESOURCES = ("archive_http", "rest_jobs")


def check_endpoints():
    """onstart: one request per endpoint in use before any job starts; an unreachable host
    stops the run here with one line per endpoint (not hundreds of retried jobs). A run
    none of whose jobs talks to Binance (a rebuild of parsed, generated or resampled files
    with a fresh listing, e.g. offline) asks nothing."""
    verbose = reachability.verbose_requested(workflow.output_settings.verbose)
    if verbose:  # jobs inherit it: their tracebacks reach the console too (logs.py)
        os.environ[reachability.VERBOSE_ENV] = "1"
    # Jobs after a listing checkpoint are not known before it ran; a listing job is a
    # network job itself, so a run with one is checked as before.
    to_run = workflow.dag.needrun_jobs()
    if not any(k in job.rule.resources for job in to_run for k in NETWORK_RESOURCES):
        return
    targets = [rule.name for rule in workflow.dag.targetrules]
    if workflow.dag.targetfiles:
        targets.append("(files)")
    endpoints = reachability.workflow_endpoints(config, TRADE_TYPES, targets)
    failures = reachability.preflight(endpoints)
    if failures:
        # Printed and ended here: a WorkflowError would add Snakemake's traceback lines.
        print(reachability.report(failures, verbose), file=sys.stderr)
        sys.exit(1)


# ------------------------------------------------------------------ report
def summaries_after_failure():
    """onerror: the run summaries of the trade types that finished, for the stages the run's
    targets need (``all``, ``report`` or none: every stage of the run; a stage's target:
    that stage), written again after their stage's summary job failed for another trade
    type or did not run (crypto_lakehouse.summary.summaries_after_failure). Dry runs and
    other targets write nothing."""
    if DRY_RUN:
        return
    from crypto_lakehouse.summary import summaries_after_failure as write_summaries

    targets = set(workflow.dag_settings.targets or ()) or {"all"}
    whole = bool(targets & {"all", "report"})
    args = []
    for stage in ACTIVE_STAGES:
        if not (whole or stage in targets):
            continue
        try:  # a failed listing leaves its checkpoint incomplete: no shard reports known
            args += get_summary_args({"stage": stage})["summaries"]
        except Exception:
            continue
    line = write_summaries(args)
    if line:
        print(line, file=sys.stderr)


def report_after_failure(snakemake_log):
    """onerror: a failed run of `all` or `report` writes the report page anyway, its failed
    jobs at the top (crypto_lakehouse.report.job.report_after_failure); other targets and
    dry runs leave the page alone."""
    targets = set(workflow.dag_settings.targets or ())
    if DRY_RUN or (targets and not targets & {"all", "report"}):
        return
    from crypto_lakehouse.failures import failed_jobs, failure_lines
    from crypto_lakehouse.report.job import report_after_failure as write_page

    outputs = {name: str(path) for name, path in rules.report.output.items()}
    lines, jobs = failure_lines(snakemake_log), len(failed_jobs(snakemake_log))
    print(write_page(lines, jobs, **get_report_args(None), **outputs), file=sys.stderr)


def get_report_args(wildcards):
    args = dict(
        data_dir=DATA,
        interval=INTERVAL,
        trade_types=TRADE_TYPES,
        end_date=END_DATE,
        stale_after_hours=config["report"]["stale_after_hours"],
        # The run's symbols: freshness lists those without any record (failed before any
        # data was written) as stale; the records alone never name them.
        kline_listings={t: listing_index_path(t, KLINES) for t in TRADE_TYPES},
        # The run's stages and their trade types (those of its summaries): a stage the
        # config leaves out (features disabled, no resample targets) is "off" in section 4.
        stages={
            stage: RESAMPLED_TRADE_TYPES if stage == "resample" else TRADE_TYPES
            for stage in ACTIVE_STAGES
        },
        # The run's start: the slowest jobs on the page are those that ended after it (the
        # benchmark folder keeps earlier runs' files too). Not in the args digest.
        started_unix=RUN_STARTED_UNIX,
    )
    if LH != layout.default_run_dir(DATA):
        args["run_dir"] = LH  # given only when not the default: a local run's params stay
    return args
