# Legacy gen_kline.sh: merge archive and REST candles, split at gaps, VWAP, funding join, fill.


rule gen_kline_symbol:
    input:
        unpack(get_gen_input),
    output:
        report_path=f"{LH}/reports/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.json",
    log:
        f"{LH}/logs/gen_kline/{{trade_type}}/klines-{{interval}}/{{symbol}}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        args=get_gen_args,
        contract_size_override=get_contract_size_override,
    script:
        "../scripts/gen_kline_symbol.py"


rule gen_kline:
    input:
        summaries("gen_kline"),
