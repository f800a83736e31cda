import torch

from skinlesion.evaluate.scoring import evaluate_tier
from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    evaluate_tier(
        snakemake.input.ckpt,
        snakemake.input.images,
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output.metrics,
        snakemake.output.predictions,
        snakemake.output.val_predictions,
        tier=snakemake.wildcards.tier,
        tta=snakemake.params.tta,
        target_sensitivity=snakemake.params.target_sensitivity,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        metadata_model=snakemake.input.metadata or None,
        provenance=job_provenance(snakemake),
        ledger=snakemake.params.ledger,
        device=snakemake.params.device,
    )
