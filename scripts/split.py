from skinlesion.data.split import write_split
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    write_split(
        snakemake.input.index,
        snakemake.output.split,
        snakemake.output.counts,
        snakemake.output.development,
        ratios=dict(snakemake.params.ratios),
        seed=snakemake.params.seed,
    )
