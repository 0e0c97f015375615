# The report target: one self-contained HTML page (coverage, quality, freshness, the run,
# checks) from the records every stage leaves; docs/report.md.


rule report:
    input:
        summaries=[summaries(stage) for stage in ACTIVE_STAGES],
    output:
        index=report(
            f"{LH}/report/index.html",
            category="Lakehouse report",
            labels={"page": "index.html"},
        ),
        coverage=f"{LH}/report/coverage.parquet",
        figures_dir=report(
            directory(f"{LH}/report/figures"),
            patterns=["{name}.png"],
            category="Lakehouse report",
            labels={"figure": "{name}"},
        ),
    log:
        f"{LH}/logs/report/report.log",
    benchmark:
        f"{LH}/benchmarks/report/report.tsv"
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    params:
        job=job_json(get_report_args),
        python=PYTHON,
        script=script_path("report"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"
