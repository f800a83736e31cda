from skinlesion.figures import evaluation_figures
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    evaluation_figures(
        snakemake.input.predictions,
        snakemake.input.metrics,
        snakemake.output.confusion,
        snakemake.output.roc,
        snakemake.output.reliability,
        tier=snakemake.wildcards.tier,
    )
