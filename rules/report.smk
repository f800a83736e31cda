# Report stage: the comparison table, training curves, and results/report.html.


rule training_curves:
    input:
        expand(f"{MODELS}/{{tier}}/history.csv", tier=TIERS),
    output:
        report(f"{FIGURES}/training_curves.png", caption="../report/training_curves.rst", category="Training"),
    params:
        tiers=TIERS,
    benchmark:
        f"{BENCHMARKS}/training_curves.tsv",
    log:
        f"{LOGS}/training_curves.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/training_curves.py"


rule compare:
    input:
        metrics=expand(f"{METRICS}/{{tier}}.json", tier=TIERS),
        histories=expand(f"{MODELS}/{{tier}}/history.csv", tier=TIERS),
        ensemble=f"{METRICS}/ensemble.json" if len(TIERS) > 1 else [],
        deployed=expand(f"{METRICS}/{{tier}}_deployed.json", tier=TIERS),
    output:
        report(f"{METRICS}/comparison.csv", caption="../report/comparison.rst", category="Evaluation"),
    benchmark:
        f"{BENCHMARKS}/compare.tsv",
    log:
        f"{LOGS}/compare.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/compare.py"


rule report:
    input:
        checksums=f"{DATA}/checksums.csv",
        split_counts=f"{DATA}/split_counts.csv",
        skipped=f"{DATA}/skipped.csv",
        augment_preview=f"{FIGURES}/augment_preview.png",
        training_curves=f"{FIGURES}/training_curves.png",
        comparison=f"{METRICS}/comparison.csv",
        metrics=expand(f"{METRICS}/{{tier}}.json", tier=TIERS),
        confusion=expand(f"{FIGURES}/{{tier}}/confusion.png", tier=TIERS),
        roc=expand(f"{FIGURES}/{{tier}}/roc.png", tier=TIERS),
        reliability=expand(f"{FIGURES}/{{tier}}/reliability.png", tier=TIERS),
        error_analysis=f"{RESULTS}/error_analysis/highlights.html",
        error_analysis_html=f"{RESULTS}/error_analysis/error_analysis.html",
        external=expand(f"{METRICS}/{{tier}}_external.json", tier=TIERS) if EXTERNAL else [],
        deployed=expand(f"{METRICS}/{{tier}}_deployed.json", tier=TIERS),
        model_cards=expand(f"{EXPORT}/{{tier}}/MODEL_CARD.md", tier=TIERS),
    output:
        "results/report.html",
    params:
        tiers=TIERS,
        ledger=LEDGER,
        benchmarks=BENCHMARKS,
        workflow_dir=workflow.basedir,
    benchmark:
        f"{BENCHMARKS}/report.tsv",
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/report.py"


rule error_analysis:
    input:
        predictions=expand(f"{PREDICTIONS}/{{tier}}_test.csv", tier=TIERS),
        metrics=expand(f"{METRICS}/{{tier}}.json", tier=TIERS),
        checkpoints=expand(f"{MODELS}/{{tier}}/best.ckpt", tier=TIERS),
        images=CACHE["images"],
        index=CACHE["index"],
    output:
        highlights=f"{RESULTS}/error_analysis/highlights.html",
    params:
        tiers=TIERS,
    benchmark:
        f"{BENCHMARKS}/error_analysis.tsv"
    log:
        notebook=f"{RESULTS}/error_analysis/error_analysis.ipynb",
    conda:
        "../envs/torch.yaml"
    notebook:
        "../notebooks/error_analysis.ipynb"


rule error_analysis_html:
    input:
        f"{RESULTS}/error_analysis/error_analysis.ipynb",
    output:
        f"{RESULTS}/error_analysis/error_analysis.html",
    benchmark:
        f"{BENCHMARKS}/error_analysis_html.tsv"
    log:
        f"{LOGS}/error_analysis_html.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "jupyter nbconvert --to html --output-dir $(dirname {output}) {input} > {log} 2>&1"
