# Legacy aws_parse.sh: verified archives to monthly Parquet partitions (klines) and one
# file per symbol (funding), incremental, with validation and a quality record.


rule aws_parse_klines:
    input:
        download_report=f"{LH}/reports/aws_download/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    output:
        report_path=f"{LH}/reports/aws_parse/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    log:
        f"{LH}/logs/aws_parse/{{trade_type}}/klines-{{interval}}/{{symbol}}.log",
    benchmark:
        f"{LH}/benchmarks/aws_parse/{{trade_type}}/klines-{{interval}}/{{symbol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        job=job_json(get_parse_args),
        python=PYTHON,
        script=script_path("aws_parse_klines"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_parse_funding:
    input:
        download_report=f"{LH}/reports/aws_download/{{trade_type}}/funding/{{symbol}}.json",
    output:
        report_path=f"{LH}/reports/aws_parse/{{trade_type}}/funding/{{symbol}}.json",
    log:
        f"{LH}/logs/aws_parse/{{trade_type}}/funding/{{symbol}}.log",
    benchmark:
        f"{LH}/benchmarks/aws_parse/{{trade_type}}/funding/{{symbol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        job=job_json(get_parse_args),
        python=PYTHON,
        script=script_path("aws_parse_funding"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"


rule aws_parse:
    input:
        summaries("aws_parse"),
