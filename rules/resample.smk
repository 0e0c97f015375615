# Legacy resample.sh: coarser candles at every offset, several target intervals per job.


rule resample_symbol:
    input:
        gen_report=f"{LH}/reports/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    output:
        report_path=f"{LH}/reports/resample/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    log:
        f"{LH}/logs/resample/{{trade_type}}/klines-{{interval}}/{{symbol}}.log",
    benchmark:
        f"{LH}/benchmarks/resample/{{trade_type}}/klines-{{interval}}/{{symbol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        job=job_json(get_resample_args),
        python=PYTHON,
        script=script_path("resample_symbol"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule resample:
    input:
        get_resample_target_input,
