import torch

from skinlesion.logs import log_to
from skinlesion.train.selection import cross_validate_fold

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    cross_validate_fold(
        snakemake.wildcards.tier,
        folds_csv=snakemake.input.folds,
        fold=int(snakemake.wildcards.fold),
        images=snakemake.input.images,
        index=snakemake.input.index,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        tta=snakemake.params.tta,
        work_dir=snakemake.params.work_dir,
        out_ckpt=snakemake.output.ckpt,
        out_predictions=snakemake.output.predictions,
        device=snakemake.params.device,
    )
