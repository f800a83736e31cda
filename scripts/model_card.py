from skinlesion.logs import log_to
from skinlesion.report.model_card import model_card

with log_to(snakemake.log[0]):
    model_card(
        snakemake.input.contract,
        snakemake.input.deployed,
        snakemake.input.predictions,
        snakemake.input.index,
        snakemake.input.metrics,
        snakemake.input.ckpt,
        snakemake.output.card,
        snakemake.output.facts,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        min_cases=snakemake.params.min_cases,
        max_ci_width=snakemake.params.max_ci_width,
        dataverse_md5=snakemake.params.dataverse_md5,
        hf_folder=snakemake.params.hf_folder,
    )
