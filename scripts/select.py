from skinlesion.logs import log_to
from skinlesion.train.selection import summarise

with log_to(snakemake.log[0]):
    summarise(
        snakemake.wildcards.tier,
        {variant: list(paths) for variant, paths in snakemake.input.items()},
        snakemake.output[0],
    )
