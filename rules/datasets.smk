# Archive datasets beyond klines and funding (config `datasets:`; docs/datasets.md).
# Listing and download reuse list_archive / aws_download_shard (their {dataset} wildcard
# comes from the registry); the parse rules below are per (trade type, dataset, shard).
# Target `datasets`, separate from `all` so the main targets are unchanged. Its functions
# are in rules/datasets_functions.smk.


rule aws_parse_ticks:
    input:
        unpack(get_extra_parse_input),
    output:
        shard_report=layout.shard_report_path(
            LH, "aws_parse", "{trade_type}", "{tick_dataset}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "aws_parse", "{trade_type}", "{tick_dataset}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "aws_parse", "{trade_type}", "{tick_dataset}", "{shard}")
    wildcard_constraints:
        tick_dataset="aggTrades|trades|metrics",
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=shard_mem_mb(1000),
        runtime=archive_runtime(2, "aws_parse", "aws_download"),
    params:
        job=shard_job_json(get_extra_parse_args),
        args=args_digest(get_extra_parse_args),
        retry=shard_retry("aws_parse", "{tick_dataset}"),
        python=job_python,
        script=script_path("aws_parse_ticks"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_parse_kline_layout:
    input:
        unpack(get_extra_parse_input),
    output:
        shard_report=layout.shard_report_path(
            LH, "aws_parse", "{trade_type}", "{kline_dataset}-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(
            LH, "aws_parse", "{trade_type}", "{kline_dataset}-{interval}", "{shard}"
        ),
    benchmark:
        layout.shard_benchmark_path(
            LH, "aws_parse", "{trade_type}", "{kline_dataset}-{interval}", "{shard}"
        )
    wildcard_constraints:
        kline_dataset="markPriceKlines|indexPriceKlines|premiumIndexKlines",
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=parse_klines_mem_mb(),
        runtime=archive_runtime(2, "aws_parse", "aws_download"),
    params:
        job=shard_job_json(get_extra_parse_args),
        args=args_digest(get_extra_parse_args),
        retry=shard_retry("aws_parse", "{kline_dataset}-{interval}"),
        python=job_python,
        script=script_path("aws_parse_klines"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule agg_klines_shard:
    input:
        unpack(get_agg_klines_input),
    output:
        shard_report=layout.shard_report_path(
            LH, "agg_klines", "{trade_type}", "aggTrades-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "agg_klines", "{trade_type}", "aggTrades-{interval}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(
            LH, "agg_klines", "{trade_type}", "aggTrades-{interval}", "{shard}"
        )
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=shard_mem_mb(2000, dataset="aggTrades"),
        runtime=archive_runtime(
            2, "agg_klines", "aws_parse", dataset="aggTrades", own_tag=agg_klines_tag
        ),
    params:
        job=shard_job_json(get_agg_klines_args, retried=False),
        args=args_digest(get_agg_klines_args),
        python=job_python,
        script=script_path("agg_klines"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule agg_klines:
    input:
        get_agg_klines_reports,


rule summarize_datasets:
    input:
        parse_reports=get_datasets_parse_reports,
    output:
        summary=layout.run_summary_path(LH, "datasets", "{trade_type}"),
    log:
        layout.job_log_path(LH, "summaries", "datasets", "{trade_type}"),
    benchmark:
        layout.job_benchmark_path(LH, "summaries", "datasets", "{trade_type}")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    params:
        job=job_json(get_datasets_summary_args),
        # The listing paths follow from the tags (an upgrade that added them reruns nothing).
        args=args_digest(get_datasets_summary_args, ignore=("listings",)),
        python=PYTHON,
        script=script_path("summarize_datasets"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule datasets:
    input:
        get_datasets_input,
