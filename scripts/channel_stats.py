from skinlesion.data.split import channel_stats
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    channel_stats(snakemake.input.images, snakemake.input.index, snakemake.input.split, snakemake.output[0])
