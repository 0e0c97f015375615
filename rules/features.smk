# Technical indicators (TA-Lib) and microstructure of every generated and resampled file.


rule features_shard:
    input:
        unpack(get_features_input),
        # A changed config reaches this job from any working directory (rerun_stamp).
        stamp=rerun_stamp("features_shard", args_digest(get_features_args)),
    output:
        shard_report=layout.shard_report_path(
            LH, "features", "{trade_type}", "klines-{interval}", "{shard}"
        ),
    log:
        layout.shard_log_path(LH, "features", "{trade_type}", "klines-{interval}", "{shard}"),
    benchmark:
        layout.shard_benchmark_path(LH, "features", "{trade_type}", "klines-{interval}", "{shard}")
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=candle_mem_mb("features", "gen_kline"),
        runtime=candle_runtime("features", "gen_kline"),
    params:
        job=shard_job_json(get_features_args),
        args=args_digest(get_features_args),
        retry=shard_retry("features", "klines-{interval}"),
        python=job_python,
        script=script_path("features_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule features:
    input:
        get_features_target_input,
