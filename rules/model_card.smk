# Model cards: per exported model, MODEL_CARD.md (and the facts it states, MODEL_CARD.json) rendered
# from its evaluation files; for the transfer tier (a timm network) also a Hugging Face / timm folder.

MODEL_CARDS = [f"{EXPORT}/{tier}/MODEL_CARD.md" for tier in TIERS]
HF_FILES = ("config.json", "model.safetensors", "README.md")
HF_OUTPUTS = [f"{EXPORT}/transfer/hf/{name}" for name in HF_FILES] if "transfer" in TIERS else []


rule model_card:
    input:
        contract=f"{EXPORT}/{{tier}}/model.json",
        deployed=f"{METRICS}/{{tier}}_deployed.json",
        predictions=f"{PREDICTIONS}/{{tier}}_deployed_test.csv",
        metrics=f"{METRICS}/{{tier}}.json",
        index=DEVELOPMENT["index"],
        ckpt=f"{MODELS}/{{tier}}/best.ckpt",
    output:
        card=f"{EXPORT}/{{tier}}/MODEL_CARD.md",
        facts=f"{EXPORT}/{{tier}}/MODEL_CARD.json",
    params:
        n_boot=config["evaluate"]["n_boot"],
        seed=config["seed"],
        min_cases=config["model_card"]["min_cases"],
        max_ci_width=config["model_card"]["max_ci_width"],
        dataverse_md5={name: spec.get("md5") for name, spec in config["files"].items()},
        hf_folder=lambda wildcards: "hf" if wildcards.tier == "transfer" else None,
    wildcard_constraints:
        tier="|".join(TIERS),
    resources:
        mem_mb=2000,
    benchmark:
        f"{BENCHMARKS}/model_card/{{tier}}.tsv"
    log:
        f"{LOGS}/model_card/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/model_card.py"


# The transfer tier's trained timm network as timm's save_for_hf writes it, its model card as README.md:
# timm.create_model("local-dir:results/export/transfer/hf", pretrained=True) loads it.
rule export_hf:
    input:
        ckpt=f"{MODELS}/transfer/best.ckpt",
        contract=f"{EXPORT}/transfer/model.json",
        card=f"{EXPORT}/transfer/MODEL_CARD.md",
    output:
        **{name.split(".")[0].lower(): f"{EXPORT}/transfer/hf/{name}" for name in HF_FILES},
    threads: 1
    resources:
        mem_mb=2000,
    benchmark:
        f"{BENCHMARKS}/export_hf.tsv"
    log:
        f"{LOGS}/export_hf.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/export_hf.py"
