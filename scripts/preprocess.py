from skinlesion.data.preprocess import preprocess
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    preprocess(
        list(snakemake.input.zips),
        snakemake.input.metadata,
        snakemake.output.images,
        snakemake.output.index,
        snakemake.output.skipped,
        image_size=snakemake.params.image_size,
        on_bad_image=snakemake.params.on_bad_image,
        threads=snakemake.threads,
    )
