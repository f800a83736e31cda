from skinlesion.evaluate.scoring import evaluate_ensemble
from skinlesion.logs import log_to
from skinlesion.provenance import job_provenance

with log_to(snakemake.log[0]):
    evaluate_ensemble(
        list(snakemake.input.metrics),
        list(snakemake.input.val_predictions),
        list(snakemake.input.test_predictions),
        snakemake.input.index,
        snakemake.input.split,
        snakemake.output.metrics,
        snakemake.output.predictions,
        target_sensitivity=snakemake.params.target_sensitivity,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        metadata_model=snakemake.input.metadata or None,
        provenance=job_provenance(snakemake),
        ledger=snakemake.params.ledger,
    )
