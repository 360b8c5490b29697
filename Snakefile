# reprozoo: the study as one DAG.
#   download -> prepare -> split -> tune -> train -> evaluate -> report
# Every rule runs one `python -m reprozoo <stage>` command; see rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/report.smk"


rule all:
    input:
        all_reports(),
    default_target: True
