# skinlesion: raw HAM10000 -> verified, split, cached data -> models -> results/report.html
# The DAG, stage by stage, lives in rules/; every rule wraps one function of src/skinlesion.

from pathlib import Path


configfile: Path(workflow.basedir) / "workflow_config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"


rule all:
    input:
        DATA_OUTPUTS,
    default_target: True
