from skinlesion.logs import log_to
from skinlesion.train.metadata import fit_metadata_model

with log_to(snakemake.log[0]):
    fit_metadata_model(snakemake.input.index, snakemake.input.split, snakemake.output[0], C=snakemake.params.C)
