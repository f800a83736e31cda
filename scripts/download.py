from skinlesion.config import FileSpec
from skinlesion.data.download import download
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    download(
        FileSpec(**snakemake.params.spec),
        snakemake.output[0],
        data_dir=snakemake.params.data_dir,
        dataverse=snakemake.params.dataverse,
    )
