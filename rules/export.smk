# Export stage: each tier's best checkpoint to ONNX plus its JSON inference contract, which the
# service (`skinlesion serve`) and the Streamlit app (`skinlesion app`) load.


rule export:
    input:
        ckpt=f"{MODELS}/{{tier}}/best.ckpt",
        checksums=f"{DATA}/checksums.csv",
        **DEVELOPMENT,
    output:
        onnx=f"{EXPORT}/{{tier}}/model.onnx",
        contract=f"{EXPORT}/{{tier}}/model.json",
        **({"int8": f"{EXPORT}/{{tier}}/model.int8.onnx"} if config["export"]["quantize"] else {}),
    params:
        target_sensitivity=config["evaluate"]["target_sensitivity"],
        calibrate=config["export"]["calibrate"],
        tolerance=config["export"]["tolerance"],
        calibration_images=config["export"]["calibration_images"],
        guard=config["export"]["guard"],
        device=config["evaluate"]["device"],
    wildcard_constraints:
        tier="|".join(TIERS),
    threads: workflow.cores
    resources:
        mem_mb=4000,
    benchmark:
        f"{BENCHMARKS}/export/{{tier}}.tsv"
    log:
        f"{LOGS}/export/{{tier}}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/export.py"
