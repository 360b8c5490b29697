# cache_features: a frozen backbone runs once over a dataset. Depends only on the
# dataset, the backbone's section (arch, weights, input size) and the
# normalisation, so retuning or changing a probe's head never recomputes it.


rule cache_features:
    """Run a frozen backbone once over every image; probes train on these features alone."""
    input:
        data=DATA,
        code=[src("features.py"), src("models", "pretrained.py")],
    output:
        FEATURES,
    log:
        "logs/{dataset}/cache_features/{backbone}.log",
    benchmark:
        FEATURES_BENCHMARK
    conda:
        "../envs/reprozoo.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        backbone=backbone_json,
    shell:
        "python -m reprozoo cache-features --backbone {params.backbone:q} --data {input.data} --out {output} "
        "--threads {threads} > {log} 2>&1"
