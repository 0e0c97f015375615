# crypto_lakehouse: Binance historical market data to Parquet (successor of BHDS V1).
#
# Targets, in the legacy order (one per legacy script): aws_download, aws_parse,
# api_download, gen_kline, resample; then features (indicators and microstructure, new) and
# report (the HTML page); "all" (the default) runs them all (features while features.enabled).
# Jobs are per (trade type, dataset, shard of symbols) (docs/shards.md); listing is one
# checkpoint job for every kline and funding directory of the run. Output paths: legacy layout under
# config["data_dir"] (aws_data/, parsed_data/, api_data/, results_data/; local or s3://) and
# the records under {data_dir}/lakehouse/; Snakemake's own files (reports/, stats/, logs/,
# summaries/, ...) in the local run directory, config run_dir (default {data_dir}/lakehouse);
# see docs/architecture.md and docs/storage.md.

import sys
import time

from crypto_lakehouse.failures import failure_report
from crypto_lakehouse.logs import prune_snakemake_logs
from crypto_lakehouse.smk import (
    cancel_scheduler_timers,
    record_params_without_pandas,
    retry_with_fresh_params,
    skip_exit_collection,
)
from snakemake.utils import min_version

min_version("9.0")
# The closing headlines mark the summaries of stages this run did not rerun (older).
RUN_STARTED_UNIX = time.time()
# Saves Snakemake's import of pandas (~0.35 s of each start) when checking params records.
record_params_without_pandas()
# A retried job's params see its new resources: the srun launcher's --time and --mem.
retry_with_fresh_params()


# The default config sits next to this Snakefile, whatever the working directory;
# --configfile / --config are merged on top of it.
configfile: f"{workflow.basedir}/config/config.yaml"


include: "rules/common.smk"
include: "rules/aws_download.smk"
include: "rules/aws_parse.smk"
include: "rules/api_download.smk"
include: "rules/gen_kline.smk"
include: "rules/resample.smk"
include: "rules/report.smk"
include: "rules/features.smk"
include: "rules/datasets_functions.smk"
include: "rules/datasets.smk"
include: "rules/leftovers.smk"


rule all:
    default_target: True
    input:
        [summaries(stage) for stage in ACTIVE_STAGES],
        rules.report.output.index,
        # Datasets beyond klines and funding, when the config lists any (default: none).
        get_datasets_input,
        # Files that features.enabled: false or another base interval left (default: none).
        leftovers_removals(),


# One summary job per stage writes the summaries of every trade type (one process, not one
# per trade type); resample only for the trade types with resample targets (or resampled
# files that removed targets left: RESAMPLE_LEFTOVERS in rules/common.smk).
rule summarize:
    input:
        get_summary_input,
    output:
        [layout.run_summary_path(LH, "{stage}", t) for t in TRADE_TYPES],
    log:
        layout.job_log_path(LH, "summaries", "{stage}", "run"),
    benchmark:
        layout.job_benchmark_path(LH, "summaries", "{stage}", "run")
    wildcard_constraints:
        stage="|".join(s for s in plan.STAGES if s != "resample"),
    localrule: True
    conda:
        "envs/pipeline.yaml"
    # A few tenths of a second of reading reports: no core slot, so that the next stage's
    # CPU job does not wait for it (one summary job per stage bounds them).
    threads: 0
    params:
        job=job_json(get_summary_args),
        python=PYTHON,
        script=script_path("summarize"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule summarize_resample:
    input:
        get_summary_input,
    output:
        [layout.run_summary_path(LH, "resample", t) for t in RESAMPLED_TRADE_TYPES],
    log:
        layout.job_log_path(LH, "summaries", "resample", "run"),
    benchmark:
        layout.job_benchmark_path(LH, "summaries", "resample", "run")
    localrule: True
    conda:
        "envs/pipeline.yaml"
    threads: 0  # as rule summarize
    params:
        job=job_json(get_summary_args),
        python=PYTHON,
        script=script_path("summarize"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


onstart:
    check_launcher()
    check_slurm_status_command()
    check_endpoints()


# Both hooks end with cancel_scheduler_timers(): without it the process waits up to a
# second for Snakemake's idle scheduler timers before it exits; and skip_exit_collection():
# the exit then skips a full garbage collection over Snakemake's modules, ~0.1 s
# (crypto_lakehouse.smk).
onsuccess:
    plan.print_summaries(
        LH,
        started_unix=RUN_STARTED_UNIX,
        listings=[layout.run_listing_index_path(LH, t, KLINES) for t in TRADE_TYPES],
    )
    warn_clamped_runtimes()
    record_data_folders()
    prune_snakemake_logs(log, keep=config["snakemake_logs_kept"])
    stop_job_server()
    cancel_scheduler_timers()
    skip_exit_collection()


onerror:
    print(failure_report(log), file=sys.stderr)
    warn_clamped_runtimes()
    record_data_folders()
    summaries_after_failure()
    report_after_failure(log)
    prune_snakemake_logs(log, keep=config["snakemake_logs_kept"])
    stop_job_server()
    cancel_scheduler_timers()
    skip_exit_collection()


# Everything the parse created (Snakemake's and our modules, the rules) lives until the
# process exits: the collections while planning and running skip it (crypto_lakehouse.smk).
skip_exit_collection()
