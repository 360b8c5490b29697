# verify: module-level checks of one model, no data needed (shapes, NaN/Inf,
# gradients after one step, comparisons with reference implementations).


rule verify:
    """Module checks of one architecture against references (shapes, parameter count, gradients)."""
    input:
        cfg=PATHS["verify_cfg"],
        code=[src("engine.py"), src("verify.py")],
    output:
        verify=PATHS["verify"],
    log:
        "logs/verify/{model}.log",
    conda:
        "../envs/reprozoo.yaml"
    shell:
        "python -m reprozoo verify --model {wildcards.model} --log {log}"
