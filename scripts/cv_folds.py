from skinlesion.logs import log_to
from skinlesion.train.selection import make_folds

with log_to(snakemake.log[0]):
    make_folds(snakemake.input[0], snakemake.output[0], k=snakemake.params.k, seed=snakemake.params.seed)
