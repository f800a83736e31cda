# Training stage: the transfer tier's ImageNet weights from their pinned package, then one job per
# tier, sent to a GPU queue on a cluster (the gpu resource).


rule augment_preview:
    input:
        **DEVELOPMENT,
    output:
        report(
            f"{FIGURES}/augment_preview.png",
            caption="../report/augment_preview.rst",
            category="Data",
        ),
    params:
        settings=tier_settings(config["train"], TIERS[0]),
        seed=config["seed"],
    benchmark:
        f"{BENCHMARKS}/augment_preview.tsv",
    log:
        f"{LOGS}/augment_preview.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/augment_preview.py"


rule metadata_model:
    input:
        index=DEVELOPMENT["index"],
        split=DEVELOPMENT["split"],
    output:
        f"{MODELS}/metadata.json",
    params:
        C=config["metadata"]["C"],
    benchmark:
        f"{BENCHMARKS}/metadata_model.tsv",
    log:
        f"{LOGS}/metadata_model.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/metadata_model.py"


rule pretrained_weights:
    output:
        directory(package_folder(RESULTS, "{backbone}")),
    benchmark:
        f"{BENCHMARKS}/pretrained_weights/{{backbone}}.tsv"
    log:
        f"{LOGS}/pretrained_weights/{{backbone}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/pretrained_weights.py"


rule train:
    input:
        unpack(lambda wc: pretrained_weights(tier_settings(config["train"], wc.tier))),
        checksums=f"{DATA}/checksums.csv",
        **DEVELOPMENT,
    output:
        ckpt=f"{MODELS}/{{tier}}/best.ckpt",
        history=f"{MODELS}/{{tier}}/history.csv",
        run_id=f"{MODELS}/{{tier}}/mlflow_run_id.txt",
    params:
        settings=lambda wc: tier_settings(config["train"], wc.tier),
        seed=config["seed"],
        mlflow=config["mlflow"],
        work_dir=lambda wc: f"{MODELS}/{wc.tier}/work",
    wildcard_constraints:
        tier="|".join(TIERS),
    threads: workflow.cores
    resources:
        gpu=TRAIN_GPUS,
        lsf_extra=LSF_GPU_REQUEST,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
    benchmark:
        f"{BENCHMARKS}/train/{{tier}}.tsv",
    log:
        f"{LOGS}/train/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train.py"
