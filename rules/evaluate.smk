# Evaluation stage: each tier on the held-out, lesion-grouped test split. The evaluate rules
# (evaluate, evaluate_ensemble, evaluate_deployed) are the only ones that read its rows (CACHE's
# split.csv); everything downstream derives from their outputs.


rule evaluate:
    input:
        ckpt=f"{MODELS}/{{tier}}/best.ckpt",
        checksums=f"{DATA}/checksums.csv",
        metadata=f"{MODELS}/metadata.json" if config["metadata"]["evaluate"] else [],
        **CACHE,
    output:
        metrics=f"{METRICS}/{{tier}}.json",
        predictions=f"{PREDICTIONS}/{{tier}}_test.csv",
        val_predictions=f"{PREDICTIONS}/{{tier}}_val.csv",
    params:
        tta=config["evaluate"]["tta"],
        target_sensitivity=config["evaluate"]["target_sensitivity"],
        n_boot=config["evaluate"]["n_boot"],
        seed=config["seed"],
        device=config["evaluate"]["device"],
        ledger=LEDGER,
    wildcard_constraints:
        tier="|".join(TIERS),
    threads: workflow.cores
    resources:
        mem_mb=4000,
    benchmark:
        f"{BENCHMARKS}/evaluate/{{tier}}.tsv",
    log:
        f"{LOGS}/evaluate/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate.py"


# The mean of the tiers' probabilities, scored like one more tier (its threshold chosen on val).
rule evaluate_ensemble:
    input:
        metrics=expand(f"{METRICS}/{{tier}}.json", tier=TIERS),
        val_predictions=expand(f"{PREDICTIONS}/{{tier}}_val.csv", tier=TIERS),
        test_predictions=expand(f"{PREDICTIONS}/{{tier}}_test.csv", tier=TIERS),
        metadata=f"{MODELS}/metadata.json" if config["metadata"]["evaluate"] else [],
        checksums=f"{DATA}/checksums.csv",
        index=CACHE["index"],
        split=CACHE["split"],
    output:
        metrics=f"{METRICS}/ensemble.json",
        predictions=f"{PREDICTIONS}/ensemble_test.csv",
    params:
        target_sensitivity=config["evaluate"]["target_sensitivity"],
        n_boot=config["evaluate"]["n_boot"],
        seed=config["seed"],
        ledger=LEDGER,
    benchmark:
        f"{BENCHMARKS}/evaluate_ensemble.tsv"
    log:
        f"{LOGS}/evaluate_ensemble.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate_ensemble.py"


# The exported model as the service runs it (ONNX Runtime, no TTA, its temperature and threshold; fp32
# and, when exported, int8) on the test split and the external set.
rule evaluate_deployed:
    input:
        onnx=f"{EXPORT}/{{tier}}/model.onnx",
        contract=f"{EXPORT}/{{tier}}/model.json",
        int8=f"{EXPORT}/{{tier}}/model.int8.onnx" if config["export"]["quantize"] else [],
        checksums=f"{DATA}/checksums.csv",
        images=CACHE["images"],
        index=CACHE["index"],
        split=CACHE["split"],
        external_images=EXTERNAL["images"] if EXTERNAL else [],
        external_ground_truth=EXTERNAL["ground_truth"] if EXTERNAL else [],
    output:
        metrics=f"{METRICS}/{{tier}}_deployed.json",
        predictions=f"{PREDICTIONS}/{{tier}}_deployed_test.csv",
    params:
        n_boot=config["evaluate"]["n_boot"],
        seed=config["seed"],
        ledger=LEDGER,
    wildcard_constraints:
        tier="|".join(TIERS),
    threads: workflow.cores
    resources:
        mem_mb=4000,
    benchmark:
        f"{BENCHMARKS}/evaluate_deployed/{{tier}}.tsv"
    log:
        f"{LOGS}/evaluate_deployed/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate_deployed.py"


rule evaluation_figures:
    input:
        predictions=f"{PREDICTIONS}/{{tier}}_test.csv",
        metrics=f"{METRICS}/{{tier}}.json",
        deployed_predictions=f"{PREDICTIONS}/{{tier}}_deployed_test.csv",
        deployed_metrics=f"{METRICS}/{{tier}}_deployed.json",
    output:
        confusion=report(
            f"{FIGURES}/{{tier}}/confusion.png",
            caption="../report/confusion.rst",
            category="Evaluation",
            subcategory="{tier}",
        ),
        roc=report(
            f"{FIGURES}/{{tier}}/roc.png",
            caption="../report/roc.rst",
            category="Evaluation",
            subcategory="{tier}",
        ),
        reliability=report(
            f"{FIGURES}/{{tier}}/reliability.png",
            caption="../report/reliability.rst",
            category="Evaluation",
            subcategory="{tier}",
        ),
    benchmark:
        f"{BENCHMARKS}/evaluation_figures/{{tier}}.tsv",
    log:
        f"{LOGS}/evaluation_figures/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluation_figures.py"


rule evaluate_external:
    input:
        ckpt=f"{MODELS}/{{tier}}/best.ckpt",
        internal=f"{METRICS}/{{tier}}.json",
        checksums=f"{DATA}/checksums.csv",
        images=EXTERNAL["images"] if EXTERNAL else [],
        ground_truth=EXTERNAL["ground_truth"] if EXTERNAL else [],
    output:
        metrics=f"{METRICS}/{{tier}}_external.json",
        predictions=f"{PREDICTIONS}/{{tier}}_external.csv",
    params:
        tta=config["evaluate"]["tta"],
        n_boot=config["evaluate"]["n_boot"],
        seed=config["seed"],
        device=config["evaluate"]["device"],
    wildcard_constraints:
        tier="|".join(TIERS),
    threads: workflow.cores
    benchmark:
        f"{BENCHMARKS}/evaluate_external/{{tier}}.tsv"
    log:
        f"{LOGS}/evaluate_external/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate_external.py"
