import torch

from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance
from skinlesion.train.fit import train_tier

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    train_tier(
        snakemake.wildcards.tier,
        images=snakemake.input.images,
        index=snakemake.input.index,
        split=snakemake.input.split,
        stats=snakemake.input.stats,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        out_ckpt=snakemake.output.ckpt,
        out_history=snakemake.output.history,
        out_run_id=snakemake.output.run_id,
        work_dir=snakemake.params.work_dir,
        mlflow_cfg=snakemake.params.mlflow,
        provenance=job_provenance(snakemake),
    )
