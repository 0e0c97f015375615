# Legacy api_download.sh: REST fill of missing and recent days, and funding history.


# One job fetches the exchangeInfo of every trade type of the run (one process start).
rule exchange_info:
    input:
        stamp=rerun_stamp(
            "exchange_info", args_digest(get_exchange_info_args), get_exchange_info_refresh
        ),
    output:
        # update(): Snakemake leaves them in place when the job reruns, so that the rerun
        # after a failed request keeps the trade types that were answered (keep).
        [update(exchange_info_path(t)) for t in TRADE_TYPES],
    log:
        layout.job_log_path(LH, "exchange_info", "run"),
    benchmark:
        layout.job_benchmark_path(LH, "exchange_info", "run")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    # Network-bound: no core slot; the profile's global resource caps concurrency.
    threads: 0
    resources:
        rest_jobs=1,
    params:
        job=job_json(get_exchange_info_job_args),
        args=args_digest(get_exchange_info_args),
        refresh=get_exchange_info_refresh,
        python=PYTHON,
        script=script_path("exchange_info"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


# One job per (trade type, shard): the shard's REST klines and (futures) funding through one
# client of the host (one process, one limiter; rest/host.py).
rule api_download_shard:
    input:
        unpack(get_api_input),
        stamp=rerun_stamp(
            "api_download_shard", args_digest(get_api_args), shard_retry("api_download")
        ),
    output:
        shard_report=layout.api_shard_report_path(LH, "{trade_type}", "{shard}"),
    log:
        layout.job_log_path(LH, "api_download", "{trade_type}", "shards", "{shard}"),
    benchmark:
        layout.job_benchmark_path(LH, "api_download", "{trade_type}", "shards", "{shard}")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    # Network-bound: no core slot; the profile's global resource caps concurrency.
    threads: 0
    resources:
        rest_jobs=1,
    params:
        job=shard_job_json(get_api_args),
        args=args_digest(get_api_args),
        retry=shard_retry("api_download"),
        python=PYTHON,
        script=script_path("api_download_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule api_download:
    input:
        summaries("api_download"),
