# skinlesion: raw HAM10000 -> verified, split, cached data -> models -> results/report.html
# The DAG, stage by stage, lives in rules/; every rule wraps one function of src/skinlesion but two,
# which run the error-analysis notebook and convert it to HTML with nbconvert.

from pathlib import Path


configfile: Path(workflow.basedir) / "workflow_config.yaml"


# The image every rule runs in under --software-deployment-method apptainer (null: none).
container: config["container"]


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/select.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/export.smk"
include: "rules/model_card.smk"


rule all:
    input:
        "results/report.html",
        EXPORT_OUTPUTS,
        HF_OUTPUTS,
    default_target: True


rule data:
    input:
        DATA_OUTPUTS,
