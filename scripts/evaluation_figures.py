from skinlesion.logs import log_to
from skinlesion.report.figures import evaluation_figures

with log_to(snakemake.log[0]):
    evaluation_figures(
        snakemake.input.predictions,
        snakemake.input.metrics,
        snakemake.output.confusion,
        snakemake.output.roc,
        snakemake.output.reliability,
        tier=snakemake.wildcards.tier,
        deployed=(snakemake.input.deployed_predictions, snakemake.input.deployed_metrics),
    )
