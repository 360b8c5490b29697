# report: the comparison table and the study's figures for one dataset, and the figures
# that models declare (attention maps, sample grids).


rule report:
    """The comparison table beside the paper's numbers, verdicts, ablations and the figures."""
    input:
        cfg=PATHS["report_cfg"],
        metrics=per_run("metrics"),
        run=per_run("run"),
        best=per_run("best"),
        history=per_run("history"),
        confusion=per_run("confusion"),
        predictions=per_run("predictions"),
        verify=expand(PATHS["verify"], model=MODELS, allow_missing=True),
        code=[*(src("report", f"{m}.py") for m in REPORT_MODULES), src("results.py"), src("stats.py")],
    output:
        table_csv=report(PATHS["table_csv"], caption="../workflow/report/comparison.rst", category="Tables"),
        table_md=PATHS["table_md"],
        verdicts=report(PATHS["verdicts"], caption="../workflow/report/verdicts.rst", category="Tables"),
        claims=report(PATHS["claims"], caption="../workflow/report/claims.rst", category="Tables"),
        ablation_table=report(PATHS["ablation_table"], caption="../workflow/report/ablations.rst", category="Tables"),
        verification_table=report(
            PATHS["verification_table"], caption="../workflow/report/verification.rst", category="Tables"
        ),
        summary=PATHS["summary"],
        histories=PATHS["histories"],
        accuracy_plot=report(PATHS["accuracy_plot"], caption="../workflow/report/accuracy.rst", category="Figures"),
        curves=report(
            expand(PATHS["curves"], model=MODELS, allow_missing=True),
            caption="../workflow/report/curves.rst",
            category="Training curves",
        ),
        confusion_plots=report(
            expand(PATHS["confusion_plot"], model=MODELS, allow_missing=True),
            caption="../workflow/report/confusion.rst",
            category="Confusion matrices",
        ),
        pdfs=[
            pdf_twin(f)
            for f in expand(
                [PATHS["accuracy_plot"], PATHS["curves"], PATHS["confusion_plot"]], model=MODELS, allow_missing=True
            )
        ],
    log:
        "logs/{dataset}/report.log",
    benchmark:
        "logs/{dataset}/benchmarks/report.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo report --dataset {wildcards.dataset} --log {log}"


rule attention:
    """Class-token attention maps of a transformer (models that declare them)."""
    input:
        cfg=PATHS["model_cfg"],
        data=PATHS["data"],
        weights=study_run("weights"),
        code=src("attention.py"),
    output:
        attention_plot=report(
            PATHS["attention_plot"], caption="../workflow/report/attention.rst", category="Attention maps"
        ),
        pdf=pdf_twin(PATHS["attention_plot"]),
    log:
        "logs/{dataset}/attention/{model}.log",
    benchmark:
        "logs/{dataset}/benchmarks/attention/{model}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo attention --dataset {wildcards.dataset} --model {wildcards.model} --log {log}"


rule samples:
    """Class-conditional sample grids of a generative classifier (models that declare them)."""
    input:
        cfg=PATHS["model_cfg"],
        data=PATHS["data"],
        weights=study_run("weights"),
        history=study_run("history"),
        code=src("samples.py"),
    output:
        samples_plot=report(
            PATHS["samples_plot"], caption="../workflow/report/samples.rst", category="Generative models"
        ),
        pdf=pdf_twin(PATHS["samples_plot"]),
    log:
        "logs/{dataset}/samples/{model}.log",
    benchmark:
        "logs/{dataset}/benchmarks/samples/{model}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo samples --dataset {wildcards.dataset} --model {wildcards.model} --log {log}"
