# cache_features: a frozen backbone runs once over a dataset. Its section file holds only the
# backbone (arch, weights, input size), the normalisation and the CPU threads, so retuning or
# changing a probe's head never recomputes it.


rule cache_features:
    """Run a frozen backbone once over every image; probes train on these features alone."""
    input:
        cfg=PATHS["backbone_cfg"],
        data=PATHS["data"],
        code=[src("features.py"), src("models", "pretrained.py")],
    output:
        features=PATHS["features"],
    log:
        "logs/{dataset}/cache_features/{backbone}.log",
    benchmark:
        "logs/{dataset}/benchmarks/cache_features/{backbone}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    threads: THREADS
    resources:
        gpu=1,
    shell:
        "python -m reprozoo cache-features --dataset {wildcards.dataset} --backbone {wildcards.backbone} --log {log}"
