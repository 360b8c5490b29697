# cache_features: a frozen backbone runs once over a dataset. Depends only on the
# dataset, the backbone's section (arch, weights, input size) and the
# normalisation, so retuning or changing a probe's head never recomputes it.


rule cache_features:
    """Run a frozen backbone once over every image; probes train on these features alone."""
    input:
        **stage_inputs("cache-features"),
        code=[src("features.py"), src("models", "pretrained.py")],
    output:
        **stage_outputs("cache-features"),
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
        **stage_params("cache-features"),
    shell:
        stage_shell("cache-features")
