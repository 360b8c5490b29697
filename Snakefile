# reprozoo's entry point from the repository root (`snakemake`, `snakemake --lint`, the
# Makefile, `python -m reprozoo dvc-yaml`). The workflow itself is workflow/Snakefile,
# where the Snakemake workflow catalog looks for it (docs/pipeline.md); rules are in rules/.
#
# Not `include:`, which drops the included file's default target (Snakemake keeps the
# includer's, snakemake/snakemake#2773): `rule all` must stay the default target here too.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
