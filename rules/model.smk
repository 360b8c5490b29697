# tune -> train -> evaluate: one model on one dataset. A model's section file also tracks its
# own source files (reprozoo/sections.py), so editing reprozoo/models/cnn.py reruns cnn alone.


rule tune:
    """hyperopt over the lr on the tuning split (20 trials, early stopping), or the paper's lr and epochs."""
    input:
        cfg=PATHS["model_cfg"],
        data=PATHS["data"],
        split=study_split,
        features=backbone_features,
        code=[src("engine.py"), src("tune.py")],
    output:
        trials=PATHS["trials"],
        best=PATHS["best"],
    log:
        "logs/{dataset}/tune/{model}.log",
    benchmark:
        "logs/{dataset}/benchmarks/tune/{model}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    threads: TUNE_CORES
    resources:
        gpu=1,  # one card per job: `--resources gpu=1` runs them one at a time
    shell:
        "python -m reprozoo tune --dataset {wildcards.dataset} --model {wildcards.model} --cores {threads}"
        " --log {log}"


rule train:
    """Final training on the whole training set at the tuned lr for the tuned epochs; test set every epoch."""
    input:
        cfg=PATHS["model_cfg"],
        data=PATHS["data"],
        split=study_split,
        best=PATHS["best"],
        features=backbone_features,
        code=[src("engine.py"), src("train.py")],
    output:
        weights=PATHS["weights"],
        history=PATHS["history"],
        run=PATHS["run"],
    log:
        "logs/{dataset}/train/{model}/seed{seed}.log",
    benchmark:
        "logs/{dataset}/benchmarks/train/{model}/seed{seed}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    threads: THREADS
    resources:
        gpu=1,
    shell:
        "python -m reprozoo train --dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed}"
        " --log {log}"


rule evaluate:
    """Test accuracy, loss, confusion matrix and per-image predictions of the trained weights (plus extra test sets)."""
    input:
        cfg=PATHS["evaluate_cfg"],
        data=PATHS["data"],
        weights=PATHS["weights"],
        features=backbone_features,
        code=[src("engine.py"), src("evaluate.py")],
    output:
        metrics=PATHS["metrics"],
        confusion=PATHS["confusion"],
        predictions=PATHS["predictions"],
    log:
        "logs/{dataset}/evaluate/{model}/seed{seed}.log",
    benchmark:
        "logs/{dataset}/benchmarks/evaluate/{model}/seed{seed}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    threads: THREADS
    resources:
        gpu=1,
    shell:
        "python -m reprozoo evaluate --dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed}"
        " --log {log}"
