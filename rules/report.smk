# report: the comparison table and the study's figures for one dataset.


rule report:
    """The comparison table beside the paper's numbers, verdicts, ablations and the figures."""
    input:
        **stage_inputs("report"),
        code=src("report.py"),
    output:
        **stage_outputs(
            "report",
            table_csv=("comparison", "Tables"),
            verdicts=("verdicts", "Tables"),
            ablation_table=("ablations", "Tables"),
            verification_table=("verification", "Tables"),
            accuracy_plot=("accuracy", "Figures"),
        ),
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
        expand(LOG, stage="report", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("report"),
        models=report_models,
    shell:
        stage_shell("report")


rule attention:
    """Class-token attention maps of a transformer (models that declare them)."""
    input:
        **stage_inputs("attention"),
        code=src("attention.py"),
    output:
        **stage_outputs("attention", attention_plot=("attention", "Attention maps")),
        pdf=pdf_twin(PATHS["attention_plot"]),
    log:
        expand(MODEL_LOG, stage="attention", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("attention"),
    shell:
        stage_shell("attention")


rule samples:
    """Class-conditional sample grids of a generative classifier (models that declare them)."""
    input:
        **stage_inputs("samples"),
        code=src("samples.py"),
    output:
        **stage_outputs("samples", samples_plot=("samples", "Generative models")),
        pdf=pdf_twin(PATHS["samples_plot"]),
    log:
        expand(MODEL_LOG, stage="samples", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("samples"),
    shell:
        stage_shell("samples")
