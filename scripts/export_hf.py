from pathlib import Path

import torch

from skinlesion.logs import log_to
from skinlesion.serve.hf_folder import export_hf_folder

torch.set_num_threads(snakemake.threads)
with log_to(snakemake.log[0]):
    export_hf_folder(
        snakemake.input.ckpt,
        snakemake.input.contract,
        snakemake.input.card,
        Path(snakemake.output.config).parent,
    )
