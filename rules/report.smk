# report: the comparison table and the study's figures for one dataset.


rule report:
    input:
        metrics=per_model(METRICS),
        runs=per_model(RUN),
        best=per_model(BEST),
        histories=per_model(HISTORY),
        code=src("report.py"),
    output:
        csv=TABLE_CSV,
        md=TABLE_MD,
        accuracy=ACCURACY_PLOT,
        curves=expand(CURVES, model=MODELS, allow_missing=True),
    params:
        dataset=dataset_json,
        papers=papers_json,
        models=MODELS,
        figures=FIGURES,
    log:
        expand(LOG, stage="report", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo report --dataset {params.dataset:q} --papers {params.papers:q} "
        "--models {params.models} --metrics {input.metrics} --runs {input.runs} --best {input.best} "
        "--histories {input.histories} --table-csv {output.csv} --table-md {output.md} "
        "--figures {params.figures} --log {log}"
