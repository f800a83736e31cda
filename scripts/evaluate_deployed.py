from pathlib import Path

import torch

from skinlesion.evaluate.deployed import evaluate_deployed
from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance

torch.set_num_threads(snakemake.threads)
external = snakemake.input.get("external_images")
with log_to(snakemake.log[0]):
    evaluate_deployed(
        Path(snakemake.input.contract).parent,
        snakemake.input.images,
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output.metrics,
        snakemake.output.predictions,
        tier=snakemake.wildcards.tier,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        external={"images": external, "ground_truth": snakemake.input.external_ground_truth} if external else None,
        provenance=job_provenance(snakemake),
        ledger=snakemake.params.ledger,
    )
