# Technical indicators (TA-Lib) and microstructure of every generated and resampled file.


rule features_symbol:
    input:
        unpack(get_features_input),
    output:
        report_path=f"{LH}/reports/features/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    log:
        f"{LH}/logs/features/{{trade_type}}/klines-{{interval}}/{{symbol}}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        job=job_json(get_features_args),
        python=PYTHON,
        script=script_path("features_symbols"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule features:
    input:
        summaries("features"),
