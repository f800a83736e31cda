from skinlesion.data.checksum import verify_files
from skinlesion.logs import log_to

with log_to(snakemake.log[0]):
    verify_files(list(snakemake.input), snakemake.params.expected, snakemake.output[0])
