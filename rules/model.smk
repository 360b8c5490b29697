# tune -> train -> evaluate: one model on one dataset.


rule tune:
    """hyperopt over the lr on the tuning split (20 trials, early stopping), or the paper's lr and epochs."""
    input:
        **stage_inputs("tune"),
        code=model_code("tune"),
    output:
        **stage_outputs("tune"),
    log:
        expand(MODEL_LOG, stage="tune", allow_missing=True),
    benchmark:
        TUNE_BENCHMARK
    conda:
        "../envs/reprozoo.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,  # one card per job: `--resources gpu=1` runs them one at a time
    params:
        **stage_params("tune"),
    shell:
        stage_shell("tune")


rule train:
    """Final training on the whole training set at the tuned lr for the tuned epochs; test set every epoch."""
    input:
        **stage_inputs("train"),
        code=model_code("train"),
    output:
        **stage_outputs("train"),
    log:
        expand(SEED_LOG, stage="train", allow_missing=True),
    benchmark:
        TRAIN_BENCHMARK
    conda:
        "../envs/reprozoo.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,  # one card per job: `--resources gpu=1` runs them one at a time
    params:
        **stage_params("train"),
    shell:
        stage_shell("train")


rule evaluate:
    """Test accuracy, loss, confusion matrix and per-image predictions of the trained weights (plus extra test sets)."""
    input:
        **stage_inputs("evaluate"),
        code=model_code("evaluate"),
    output:
        **stage_outputs("evaluate"),
    log:
        expand(SEED_LOG, stage="evaluate", allow_missing=True),
    benchmark:
        EVALUATE_BENCHMARK
    conda:
        "../envs/reprozoo.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,  # one card per job: `--resources gpu=1` runs them one at a time
    params:
        **stage_params("evaluate"),
        trees=image_trees("evaluate"),
    shell:
        stage_shell("evaluate")
