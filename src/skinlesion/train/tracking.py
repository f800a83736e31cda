"""MLflow tracking of the train rule: one run per tier (reused by the rerun of a killed job), its
parameters, and at the end its provenance, checkpoint and history, the checkpoint registered as a
model version."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# No MLflow upload progress bars in the rule logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri(mlflow_cfg: dict) -> str:
    """``mlflow.tracking_uri``, a relative SQLite path made absolute (and its folder created)."""
    uri = mlflow_cfg["tracking_uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    return uri


@contextlib.contextmanager
def store_lock(mlflow_cfg: dict):
    """Serialise set-up and registration on a local sqlite store, which train jobs running in parallel
    (on a cluster) would otherwise race to create and migrate."""
    uri = tracking_uri(mlflow_cfg)
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    with FileLock(uri.removeprefix("sqlite:///") + ".lock"):
        yield


def start_run(mlflow_cfg: dict, tier: str, work: Path):
    """An MLflow logger for ``tier`` and its run id; the run of an interrupted attempt (its id kept in
    ``work/mlflow_run_id``) is reused."""
    from lightning.pytorch.loggers import MLFlowLogger

    run_file = work / "mlflow_run_id"
    with store_lock(mlflow_cfg):
        logger = MLFlowLogger(
            experiment_name=mlflow_cfg["experiment"],
            tracking_uri=tracking_uri(mlflow_cfg),
            run_name=tier,
            run_id=run_file.read_text().strip() if run_file.exists() else None,
            artifact_location=Path(mlflow_cfg["artifact_dir"]).resolve().as_uri(),
        )
        run_id = logger.run_id
    run_file.write_text(run_id)
    return logger, run_id


def log_settings(logger, settings: dict, **params) -> None:
    """Log ``params`` and the settings as run parameters, nested keys dotted (``augment.flip``)."""
    logger.log_hyperparams({**params, **_flatten(settings)})


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def finish_run(logger, mlflow_cfg: dict, tier: str, ckpt: str, history: str, provenance: dict) -> None:
    """Attach provenance, checkpoint and history to the run; register the checkpoint as a model version;
    mark the run finished."""
    with store_lock(mlflow_cfg):
        client, run_id = logger.experiment, logger.run_id
        for key in ("git_commit", "config_sha256", "seed"):
            if key in provenance:
                client.set_tag(run_id, key, str(provenance[key]))
        if provenance:
            client.log_dict(run_id, provenance, "provenance.json")
        client.log_artifact(run_id, ckpt, "checkpoint")
        client.log_artifact(run_id, history, "history")
        if mlflow_cfg["register"]:
            from mlflow.exceptions import MlflowException

            name = f"{mlflow_cfg['experiment']}-{tier}"
            with contextlib.suppress(MlflowException):  # already registered by an earlier run
                client.create_registered_model(name)
            source = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
            client.create_model_version(name, source=source, run_id=run_id)
        client.set_terminated(run_id, "FINISHED")
