# tune -> train -> evaluate: one model on one dataset.


rule tune:
    """hyperopt over the lr on the tuning split (20 trials, early stopping), or the paper's lr and epochs."""
    input:
        data=DATA,
        split=split_file,
        features=features_file,
        code=model_code("tune"),
    output:
        trials=TRIALS,
        best=BEST,
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
        model=model_json,
        features=features_arg,
    shell:
        "python -m reprozoo tune --model {params.model:q} --data {input.data} --split {input.split} "
        "--trials {output.trials} --best {output.best} {params.features} --threads {threads} > {log} 2>&1"


rule train:
    """Final training on the whole training set at the tuned lr for the tuned epochs; test set every epoch."""
    input:
        data=DATA,
        split=split_file,
        best=BEST,
        features=features_file,
        code=model_code("train"),
    output:
        weights=WEIGHTS,
        history=HISTORY,
        run=RUN,
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
        model=model_json,
        features=features_arg,
    shell:
        "python -m reprozoo train --model {params.model:q} --data {input.data} --split {input.split} "
        "--best {input.best} --seed {wildcards.seed} --weights {output.weights} --history {output.history} "
        "--run {output.run} "
        "{params.features} --threads {threads} > {log} 2>&1"


rule evaluate:
    """Test accuracy, loss, confusion matrix and per-image predictions of the trained weights (plus extra test sets)."""
    input:
        data=DATA,
        weights=WEIGHTS,
        features=features_file,
        code=model_code("evaluate"),
    output:
        metrics=METRICS,
        confusion=CONFUSION,
        predictions=PREDICTIONS,
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
        model=model_json,
        features=features_arg,
        extra=extra_test_args,
        trees=image_trees("evaluate"),
    shell:
        "python -m reprozoo evaluate --model {params.model:q} --data {input.data} --weights {input.weights} "
        "--metrics {output.metrics} --confusion {output.confusion} --predictions {output.predictions} "
        "{params.extra:q} {params.features} "
        "--threads {threads} > {log} 2>&1"
