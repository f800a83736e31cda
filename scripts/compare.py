from skinlesion.logs import log_to
from skinlesion.report.build import comparison_table

with log_to(snakemake.log[0]):
    comparison_table(
        list(snakemake.input.metrics),
        list(snakemake.input.histories),
        snakemake.output[0],
        ensemble=snakemake.input.ensemble or None,
        deployed=list(snakemake.input.deployed),
    )
