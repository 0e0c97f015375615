# Legacy aws_parse.sh: verified archives to monthly Parquet partitions (klines) and one
# file per symbol (funding), incremental, with validation and a quality record.


rule aws_parse_klines:
    input:
        unpack(get_parse_input),
    output:
        shard_report=layout.shard_report_path(
            LH, "aws_parse", "{trade_type}", "klines-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "aws_parse", "{trade_type}", "klines-{interval}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "aws_parse", "{trade_type}", "klines-{interval}", "{shard}")
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=parse_klines_mem_mb(),
        runtime=archive_runtime(2, "aws_parse", "aws_download"),
    params:
        job=shard_job_json(get_parse_args),
        args=args_digest(get_parse_args),
        retry=shard_retry("aws_parse", "klines-{interval}"),
        python=job_python,
        script=script_path("aws_parse_klines"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_parse_funding:
    input:
        unpack(get_parse_input),
    output:
        shard_report=layout.shard_report_path(LH, "aws_parse", "{trade_type}", "funding", "{shard}"),
    log:
        layout.shard_log_path(LH, "aws_parse", "{trade_type}", "funding", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "aws_parse", "{trade_type}", "funding", "{shard}")
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=shard_mem_mb(1000),
        runtime=archive_runtime(1, "aws_parse", "aws_download", dataset="funding"),
    params:
        job=shard_job_json(get_parse_args),
        args=args_digest(get_parse_args),
        retry=shard_retry("aws_parse", "funding"),
        python=job_python,
        script=script_path("aws_parse_funding"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_parse:
    input:
        summaries("aws_parse"),
