from skinlesion.logs import log_to
from skinlesion.train.weights import convert_package

with log_to(snakemake.log[0]):
    convert_package(snakemake.wildcards.backbone, snakemake.output[0])
