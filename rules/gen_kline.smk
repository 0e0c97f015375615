# Legacy gen_kline.sh: merge archive and REST candles, split at gaps, VWAP, funding join, fill.


rule gen_kline_symbol:
    input:
        unpack(get_gen_input),
    output:
        report_path=f"{LH}/reports/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    log:
        f"{LH}/logs/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.log",
    benchmark:
        f"{LH}/benchmarks/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        job=job_json(get_gen_args),
        python=PYTHON,
        script=script_path("gen_kline_symbol"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule gen_kline:
    input:
        summaries("gen_kline"),
