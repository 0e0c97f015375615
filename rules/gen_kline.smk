# Legacy gen_kline.sh: merge archive and REST candles, split at gaps, VWAP, funding join, fill.


rule gen_kline_shard:
    input:
        unpack(get_gen_input),
        # A changed config reaches this job from any working directory (rerun_stamp).
        stamp=rerun_stamp("gen_kline_shard", args_digest(get_gen_args)),
    output:
        shard_report=layout.shard_report_path(
            LH, "gen_kline", "{trade_type}", "klines-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "gen_kline", "{trade_type}", "klines-{interval}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "gen_kline", "{trade_type}", "klines-{interval}", "{shard}")
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=candle_mem_mb("gen_kline", "aws_parse"),
        runtime=candle_runtime("gen_kline", "aws_parse"),
    params:
        job=shard_job_json(get_gen_args),
        args=args_digest(get_gen_args),
        retry=shard_retry("gen_kline", "klines-{interval}"),
        python=job_python,
        script=script_path("gen_kline_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule gen_kline:
    input:
        summaries("gen_kline"),
