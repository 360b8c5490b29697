# verify: module-level checks of one model, no data needed (shapes, NaN/Inf,
# gradients after one step, comparisons with reference implementations).


rule verify:
    """Module checks of one architecture against references (shapes, parameter count, gradients)."""
    input:
        code=model_code("verify"),
    output:
        VERIFY,
    log:
        "logs/verify/{model}.log",
    conda:
        "../envs/reprozoo.yaml"
    params:
        model=model_json,
        expect=verify_json,
    shell:
        "python -m reprozoo verify --model {params.model:q} --expect {params.expect:q} --out {output} > {log} 2>&1"
