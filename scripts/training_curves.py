from skinlesion.logs import log_to
from skinlesion.report.figures import training_curves

with log_to(snakemake.log[0]):
    training_curves(dict(zip(snakemake.params.tiers, snakemake.input, strict=True)), snakemake.output[0])
