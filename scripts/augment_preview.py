from skinlesion.figures import augment_preview
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    augment_preview(
        snakemake.input.images,
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output[0],
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
    )
