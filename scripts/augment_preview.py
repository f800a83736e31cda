from skinlesion.logs import log_to
from skinlesion.report.figures import augment_preview

with log_to(snakemake.log[0]):
    augment_preview(
        snakemake.input.images,
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output[0],
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
    )
