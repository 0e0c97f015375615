# The report target: one self-contained HTML page (coverage, quality, freshness, the run,
# checks) from the records every stage leaves; docs/report.md.


rule report:
    input:
        summaries=[summaries(stage) for stage in ACTIVE_STAGES],
        # The datasets target's summaries (section 6), when the config lists datasets beyond
        # klines and funding: the page is written after them. None with the default lists.
        datasets=lambda wildcards: get_report_datasets_input(wildcards),
    output:
        index=report(
            layout.run_report_path(LH, "index.html"),
            category="Lakehouse report",
            labels={"page": "index.html"},
        ),
        coverage=layout.run_report_path(LH, "coverage.parquet"),
        figures_dir=report(
            directory(layout.run_report_path(LH, "figures")),
            patterns=["{name}.png"],
            category="Lakehouse report",
            labels={"figure": "{name}"},
        ),
    log:
        layout.job_log_path(LH, "report", "report"),
    benchmark:
        layout.job_benchmark_path(LH, "report", "report")
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    params:
        job=job_json(get_report_args),
        # started_unix changes every run: not a reason to rerun the report.
        args=args_digest(get_report_args, ignore=("started_unix",)),
        python=PYTHON,
        script=script_path("report"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"
