# Legacy aws_download.sh: list the archive, download and verify kline and funding zips.


# Every kline and funding listing of the run in one job (one process, one DAG update after
# it): its outputs are the per-(trade type, dataset) indexes.
checkpoint list_archive:
    input:
        stamp=rerun_stamp("list_archive", args_digest(get_run_listings_args), get_listing_refresh),
    output:
        [listing_index_path(t, d) for t, d in RUN_LISTINGS],
    log:
        layout.job_log_path(LH, "list_archive", "run"),
    benchmark:
        layout.job_benchmark_path(LH, "list_archive", "run")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    # Network-bound: no core slot; the profile's global resource caps concurrency.
    threads: 0
    resources:
        archive_http=1,
    params:
        job=job_json(get_run_listings_args),
        args=args_digest(get_run_listings_args),
        refresh=get_listing_refresh,
        python=PYTHON,
        script=script_path("list_archive"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


# One listing of a dataset beyond klines and funding (`datasets` target; docs/datasets.md).
checkpoint list_archive_dataset:
    output:
        out_index=layout.run_listing_index_path(LH, "{trade_type}", "{dataset}"),
    log:
        layout.job_log_path(LH, "list_archive", "{trade_type}", "{dataset}"),
    benchmark:
        layout.job_benchmark_path(LH, "list_archive", "{trade_type}", "{dataset}")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    # Network-bound: no core slot; the profile's global resource caps concurrency.
    threads: 0
    resources:
        archive_http=1,
    params:
        job=job_json(get_listing_args),
        args=args_digest(get_listing_args),
        refresh=get_listing_refresh,
        python=PYTHON,
        script=script_path("list_archive_dataset"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


# The run's kline and funding indexes come from list_archive, never one by one.
ruleorder: list_archive > list_archive_dataset


# One job per (trade type, dataset, shard of symbols). No input: the job is planned only after
# its listing was evaluated (stage_reports), and reruns when the digest of its symbols'
# listing digests (params) changes. A file dependency on the shared listing index would make
# Snakemake re-plan every download job after the checkpoint.
rule aws_download_shard:
    input:
        stamp=rerun_stamp(
            "aws_download_shard",
            args_digest(get_download_args, ignore=("end_date",)),
            shard_retry("aws_download", "{dataset}"),
            get_shard_digest,
        ),
    output:
        shard_report=layout.shard_report_path(
            LH, "aws_download", "{trade_type}", "{dataset}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "aws_download", "{trade_type}", "{dataset}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "aws_download", "{trade_type}", "{dataset}", "{shard}")
    # More download jobs than archive_http slots: the largest start first.
    priority: get_download_priority
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    # Network-bound: no core slot; the profile's global resource caps concurrency.
    threads: 0
    resources:
        archive_http=1,
    params:
        job=shard_job_json(get_download_args),
        # A later end_date is in `digest` only while it cuts the shard's listed files
        # (plan.shard_digest); past the newest file it selects nothing more.
        args=args_digest(get_download_args, ignore=("end_date",)),
        retry=shard_retry("aws_download", "{dataset}"),
        digest=get_shard_digest,
        python=PYTHON,
        script=script_path("aws_download_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_download:
    input:
        summaries("aws_download"),
