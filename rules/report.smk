# report: the comparison table and the study's figures for one dataset.


rule report:
    """The comparison table beside the paper's numbers, verdicts, ablations and the figures."""
    input:
        metrics=per_run(METRICS),
        runs=per_run(RUN),
        best=per_run(BEST),
        histories=per_run(HISTORY),
        confusions=per_run(CONFUSION),
        verify=expand(VERIFY, model=MODELS),
        code=src("report.py"),
    output:
        csv=report(TABLE_CSV, caption="../workflow/report/comparison.rst", category="Tables"),
        md=TABLE_MD,
        verdicts=report(VERDICTS, caption="../workflow/report/verdicts.rst", category="Tables"),
        ablations=report(ABLATION_TABLE, caption="../workflow/report/ablations.rst", category="Tables"),
        verification=report(VERIFICATION_TABLE, caption="../workflow/report/verification.rst", category="Tables"),
        summary=SUMMARY,
        accuracy=report(ACCURACY_PLOT, caption="../workflow/report/accuracy.rst", category="Figures"),
        curves=report(
            expand(CURVES, model=MODELS, allow_missing=True),
            caption="../workflow/report/curves.rst",
            category="Training curves",
        ),
        confusion=report(
            expand(CONFUSION_PLOT, model=MODELS, allow_missing=True),
            caption="../workflow/report/confusion.rst",
            category="Confusion matrices",
        ),
        pdfs=[pdf_twin(f) for f in [ACCURACY_PLOT, *expand([CURVES, CONFUSION_PLOT], model=MODELS, allow_missing=True)]],
    log:
        expand(LOG, stage="report", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        dataset=dataset_json,
        papers=papers_json,
        study=study_json,
        ablations=ablations_json,
        models=report_models,
        figures=FIGURES,
    shell:
        "python -m reprozoo report --dataset {params.dataset:q} --papers {params.papers:q} "
        "--models {params.models} --metrics {input.metrics} --runs {input.runs} --best {input.best} "
        "--histories {input.histories} --confusions {input.confusions} --verify {input.verify} "
        "--study {params.study:q} --ablations {params.ablations:q} --table-csv {output.csv} --table-md {output.md} "
        "--verdicts-csv {output.verdicts} --ablations-csv {output.ablations} "
        "--verification-csv {output.verification} --summary-json {output.summary} "
        "--figures {params.figures} > {log} 2>&1"


rule attention:
    """Class-token attention maps of a transformer (models that declare them)."""
    input:
        data=DATA,
        weights=study_seed_weights,
        code=src("attention.py"),
    output:
        png=report(ATTENTION_PLOT, caption="../workflow/report/attention.rst", category="Attention maps"),
        pdf=pdf_twin(ATTENTION_PLOT),
    log:
        expand(MODEL_LOG, stage="attention", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        model=model_json,
    shell:
        "python -m reprozoo attention --model {params.model:q} --data {input.data} --weights {input.weights} "
        "--out {output.png} > {log} 2>&1"


rule samples:
    """Class-conditional sample grids of a generative classifier (models that declare them)."""
    input:
        data=DATA,
        weights=study_seed_weights,
        history=study_seed_history,
        code=src("samples.py"),
    output:
        png=report(SAMPLES_PLOT, caption="../workflow/report/samples.rst", category="Generative models"),
        pdf=pdf_twin(SAMPLES_PLOT),
    log:
        expand(MODEL_LOG, stage="samples", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        model=model_json,
    shell:
        "python -m reprozoo samples --model {params.model:q} --data {input.data} --weights {input.weights} "
        "--history {input.history} --out {output.png} > {log} 2>&1"
