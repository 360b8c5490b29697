# reprozoo: the study as one DAG.
#   download -> prepare -> split -> [cache_features] -> tune -> train -> evaluate -> report
#   verify (per model, no data) -> report
# Every rule runs one `python -m reprozoo <stage>` command; see rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# The HTML report's front page (`snakemake --report report.html`); each figure and table
# carries its own caption (workflow/report/*.rst, the rules' `report(...)` outputs).
report: "workflow/report/workflow.rst"


include: "rules/common.smk"


# The pipeline's image (config `container.image`, checked by common.smk). Jobs run in it
# only with --use-singularity (Apptainer); see "Containers and clusters" in the README.
container: config["container"]["image"]


include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/model.smk"
include: "rules/verify.smk"
include: "rules/report.smk"


# On a cluster: stop before submitting anything that no node can run (rules/common.smk).
onstart:
    misfit = slurm_misfit()
    if misfit:
        sys.exit(misfit)


rule all:
    """The study's report for every dataset in run.datasets (the default target)."""
    default_target: True
    input:
        all_reports(),
