# Selection stage: lesion-grouped K-fold cross-validation on the development data (train + val),
# one variant of a tier against its defaults; no rule here reads a test row (docs/evaluation.md).


rule cv_folds:
    input:
        DEVELOPMENT["split"],
    output:
        f"{SELECTION}/folds.csv",
    params:
        k=config["selection"]["folds"],
        seed=config["seed"],
    benchmark:
        f"{BENCHMARKS}/cv_folds.tsv",
    log:
        f"{LOGS}/cv_folds.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/cv_folds.py"


rule cv_fold:
    input:
        unpack(
            lambda wc: pretrained_weights(
                variant_settings(config["train"], wc.tier, wc.variant, config["selection"]["variants"])
            )
        ),
        folds=f"{SELECTION}/folds.csv",
        checksums=f"{DATA}/checksums.csv",
        images=DEVELOPMENT["images"],
        index=DEVELOPMENT["index"],
    output:
        ckpt=f"{SELECTION}/{{tier}}/{{variant}}/fold{{fold}}/best.ckpt",
        predictions=f"{SELECTION}/{{tier}}/{{variant}}/fold{{fold}}/predictions.csv",
    params:
        settings=lambda wc: variant_settings(config["train"], wc.tier, wc.variant, config["selection"]["variants"]),
        seed=config["seed"],
        tta=config["evaluate"]["tta"],
        device=config["evaluate"]["device"],
        work_dir=lambda wc: f"{SELECTION}/{wc.tier}/{wc.variant}/fold{wc.fold}/work",
    wildcard_constraints:
        tier="|".join(TIERS),
        fold=r"\d+",
    threads: workflow.cores
    resources:
        gpu=TRAIN_GPUS,
        lsf_extra=LSF_GPU_REQUEST,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
    benchmark:
        f"{BENCHMARKS}/cv_fold/{{tier}}/{{variant}}/fold{{fold}}.tsv"
    log:
        f"{LOGS}/cv_fold/{{tier}}/{{variant}}/fold{{fold}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/cv_fold.py"


rule select:
    input:
        unpack(
            lambda wc: {
                variant: expand(
                    f"{SELECTION}/{wc.tier}/{variant}/fold{{fold}}/predictions.csv",
                    fold=range(config["selection"]["folds"]),
                )
                for variant in selection_variants(wc.tier)
            }
        ),
    output:
        f"{SELECTION}/{{tier}}.csv",
    wildcard_constraints:
        tier="|".join(TIERS),
    benchmark:
        f"{BENCHMARKS}/select/{{tier}}.tsv"
    log:
        f"{LOGS}/select/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/select.py"
