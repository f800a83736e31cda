from skinlesion.logs import log_to
from skinlesion.report.build import build_report

tiers = snakemake.params.tiers
with log_to(snakemake.log[0]):
    build_report(
        out_html=snakemake.output[0],
        config=snakemake.config,
        workflow_dir=snakemake.params.workflow_dir,
        checksums=snakemake.input.checksums,
        split_counts=snakemake.input.split_counts,
        skipped=snakemake.input.skipped,
        augment_preview=snakemake.input.augment_preview,
        training_curves=snakemake.input.training_curves,
        comparison=snakemake.input.comparison,
        metrics=dict(zip(tiers, snakemake.input.metrics, strict=True)),
        figures={
            tier: {"confusion": c, "roc": r, "reliability": rel}
            for tier, c, r, rel in zip(
                tiers, snakemake.input.confusion, snakemake.input.roc, snakemake.input.reliability, strict=True
            )
        },
        error_analysis=snakemake.input.get("error_analysis"),
        external=dict(zip(tiers, snakemake.input.external, strict=True)) if snakemake.input.get("external") else None,
        benchmark_dir=snakemake.params.benchmarks,
        deployed=dict(zip(tiers, snakemake.input.deployed, strict=True)),
        ledger=snakemake.params.ledger,
        model_cards=dict(zip(tiers, snakemake.input.model_cards, strict=True)),
    )
