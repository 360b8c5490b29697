# verify: module-level checks of one model, no data needed (shapes, NaN/Inf,
# gradients after one step, comparisons with reference implementations).


rule verify:
    """Module checks of one architecture against references (shapes, parameter count, gradients)."""
    input:
        code=model_code("verify"),
    output:
        **stage_outputs("verify"),
    log:
        "logs/verify/{model}.log",
    conda:
        "../envs/reprozoo.yaml"
    params:
        **stage_params("verify"),
    shell:
        stage_shell("verify")
