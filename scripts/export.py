import torch

from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance
from skinlesion.serve.export import export_tier

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    export_tier(
        snakemake.input.ckpt,
        snakemake.input.images,
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output.onnx,
        snakemake.output.contract,
        tier=snakemake.wildcards.tier,
        target_sensitivity=snakemake.params.target_sensitivity,
        calibrate=snakemake.params.calibrate,
        tolerance=snakemake.params.tolerance,
        provenance=job_provenance(snakemake),
        device=snakemake.params.device,
        out_int8=snakemake.output.get("int8"),
        calibration_images=snakemake.params.calibration_images,
        guard=snakemake.params.guard,
    )
