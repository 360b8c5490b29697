# download -> prepare -> split: one dataset's raw data to index lists.


# Downloads need the network, which cluster nodes often lack: run on the host.
localrules:
    download,


rule download:
    """Fetch (or find offline) the dataset's source files; record what was found in the manifest."""
    output:
        **stage_outputs("download"),
    log:
        expand(LOG, stage="download", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("download"),
        trees=image_trees("download"),  # an imagefolder's content: the manifest records it
    shell:
        stage_shell("download")


rule prepare:
    """Decode the dataset once into uint8 arrays (data.npz): what every later stage reads."""
    input:
        **stage_inputs("prepare"),
        code=src("data.py"),
    output:
        **stage_outputs("prepare"),
    log:
        expand(LOG, stage="prepare", allow_missing=True),
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("prepare"),
        trees=image_trees("prepare"),
    shell:
        stage_shell("prepare")


rule split:
    """The study's seeded tuning split: 20% of train, split 80/20 into tune-train and tune-val."""
    input:
        **stage_inputs("split"),
    output:
        **stage_outputs("split"),
    log:
        "logs/{dataset}/split-seed{seed}.log",
    conda:
        "../envs/reprozoo.yaml"
    params:
        tune_fraction=config["protocol"]["split"]["tune_fraction"],
        val_fraction=config["protocol"]["split"]["val_fraction"],
    shell:
        stage_shell("split")
