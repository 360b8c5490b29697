# verify: module-level checks of one model, no data needed (shapes, NaN/Inf,
# gradients after one step, comparisons with reference implementations). Its files sit in the
# dataset's folder all the same: the study's and the demo's models differ, and neither may
# overwrite the other's.


rule verify:
    """Module checks of one architecture against references (shapes, parameter count, gradients)."""
    input:
        cfg=PATHS["verify_cfg"],
        code=[src("engine.py"), src("verify.py")],
    output:
        verify=PATHS["verify"],
    log:
        "logs/{dataset}/verify/{model}.log",
    benchmark:
        "logs/{dataset}/benchmarks/verify/{model}.tsv"
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo verify --dataset {wildcards.dataset} --model {wildcards.model} --log {log}"
