# download -> prepare -> split: one dataset's raw data to index lists.


# Downloads need the network, which cluster nodes often lack: run on the host.
localrules:
    download,


rule download:
    """Fetch (or find offline) the dataset's source files; record what was found in the manifest."""
    output:
        MANIFEST,
    log:
        expand(LOG, stage="download", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        dataset=dataset_json,
        trees=image_trees("download"),  # an imagefolder's content: the manifest records it
    shell:
        "python -m reprozoo download --dataset {params.dataset:q} --out {output} > {log} 2>&1"


rule prepare:
    """Decode the dataset once into uint8 arrays (data.npz): what every later stage reads."""
    input:
        manifest=MANIFEST,
        code=src("data.py"),
    output:
        DATA,
    log:
        expand(LOG, stage="prepare", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        dataset=dataset_json,
        trees=image_trees("prepare"),
    shell:
        "python -m reprozoo prepare --dataset {params.dataset:q} --manifest {input.manifest} --out {output} > {log} 2>&1"


rule split:
    """The study's seeded tuning split: 20% of train, split 80/20 into tune-train and tune-val."""
    input:
        data=DATA,
    output:
        SPLIT,
    log:
        "logs/{dataset}/split-seed{seed}.log",
    conda:
        "../envs/reprozoo.yaml"
    params:
        tune_fraction=config["protocol"]["split"]["tune_fraction"],
        val_fraction=config["protocol"]["split"]["val_fraction"],
    shell:
        "python -m reprozoo split --data {input.data} --seed {wildcards.seed} "
        "--tune-fraction {params.tune_fraction} --val-fraction {params.val_fraction} --out {output} > {log} 2>&1"
