# download -> prepare -> split: one dataset's raw data to index lists.


# Downloads need the network, which cluster nodes often lack: run on the host.
localrules:
    download,


rule download:
    """Fetch (or find offline) the dataset's source files; record what was found in the manifest."""
    input:
        cfg=PATHS["dataset_cfg"],
    output:
        manifest=PATHS["manifest"],
    log:
        "logs/{dataset}/download.log",
    benchmark:
        "logs/{dataset}/benchmarks/download.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo download --dataset {wildcards.dataset} --log {log}"


rule prepare:
    """Decode the dataset once into uint8 arrays (data.npz): what every later stage reads."""
    input:
        cfg=PATHS["dataset_cfg"],
        manifest=PATHS["manifest"],
        code=[src("prepare.py"), src("data.py"), src("images.py")],
    output:
        data=PATHS["data"],
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "logs/{dataset}/benchmarks/prepare.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo prepare --dataset {wildcards.dataset} --log {log}"


rule split:
    """The study's seeded tuning split: 20% of train, split 80/20 into tune-train and tune-val."""
    input:
        cfg=PATHS["split_cfg"],
        data=PATHS["data"],
    output:
        split=PATHS["split"],
    log:
        "logs/{dataset}/split/seed{seed}.log",
    benchmark:
        "logs/{dataset}/benchmarks/split/seed{seed}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo split --dataset {wildcards.dataset} --seed {wildcards.seed} --log {log}"
