# Legacy resample.sh: coarser candles at every offset, several target intervals per job.


rule resample_shard:
    input:
        gen_shard=f"{LH}/reports/gen_kline/{{trade_type}}/klines-{{interval}}/shards/{{shard}}.json",
    output:
        shard_report=f"{LH}/reports/resample/{{trade_type}}/klines-{{interval}}/shards/{{shard}}.json",
    log:
        f"{LH}/logs/resample/{{trade_type}}/klines-{{interval}}/shards/{{shard}}.log",
    benchmark:
        f"{LH}/benchmarks/resample/{{trade_type}}/klines-{{interval}}/shards/{{shard}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=shard_runtime(2),
    params:
        job=shard_job_json(get_resample_args),
        python=PYTHON,
        script=script_path("resample_shard"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule resample:
    input:
        get_resample_target_input,
