import torch

from skinlesion.evaluate.external import evaluate_external
from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    evaluate_external(
        snakemake.input.ckpt,
        snakemake.input.images,
        snakemake.input.ground_truth,
        snakemake.input.internal,
        snakemake.output.metrics,
        snakemake.output.predictions,
        tta=snakemake.params.tta,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        provenance=job_provenance(snakemake),
        device=snakemake.params.device,
    )
