from skinlesion.figures import training_curves
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    training_curves(dict(zip(snakemake.params.tiers, snakemake.input, strict=True)), snakemake.output[0])
