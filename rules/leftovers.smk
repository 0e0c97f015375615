# Derived files a configuration change left behind (features.enabled turned off, another base
# interval): one job per kind and trade type removes them, planned only when the planning
# check found some (LEFTOVERS in rules/common.smk; crypto_lakehouse/leftovers.py).


rule remove_leftovers:
    output:
        # Removed at planning whenever leftovers are found (leftovers.plan_removal), so that
        # the job runs each time (features built again by `snakemake features`).
        report=layout.leftovers_report_path(LH, "{kind}", "{trade_type}"),
    log:
        layout.job_log_path(LH, "leftovers", "{kind}", "{trade_type}"),
    benchmark:
        layout.job_benchmark_path(LH, "leftovers", "{kind}", "{trade_type}")
    wildcard_constraints:
        kind="features|interval",
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    params:
        job=job_json(get_leftovers_args),
        python=PYTHON,
        script=script_path("remove_leftovers"),
    shell:
        "{params.python:q} {params.script:q} {params.job:q} {log:q}"
