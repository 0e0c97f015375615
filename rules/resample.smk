# Legacy resample.sh: coarser candles at every offset, several target intervals per job.


rule resample_shard:
    input:
        gen_shard=layout.shard_report_path(
            LH, "gen_kline", "{trade_type}", "klines-{interval}", "{shard}"
        ),
        # A changed config reaches this job from any working directory (rerun_stamp).
        stamp=rerun_stamp("resample_shard", args_digest(get_resample_args)),
    output:
        shard_report=layout.shard_report_path(
            LH, "resample", "{trade_type}", "klines-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "resample", "{trade_type}", "klines-{interval}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "resample", "{trade_type}", "klines-{interval}", "{shard}")
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=candle_mem_mb("resample", "gen_kline"),
        runtime=candle_runtime("resample", "gen_kline"),
    params:
        job=shard_job_json(get_resample_args),
        args=args_digest(get_resample_args),
        retry=shard_retry("resample", "klines-{interval}"),
        python=job_python,
        script=script_path("resample_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule resample:
    input:
        get_resample_target_input,
