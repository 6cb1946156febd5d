"""One trial of a search: a Ray Tune function trainable (the trial's driver) that fits a Ray Train run.

This is Ray's Tune-over-Train pattern (see RAY_MLFLOW_NOTES): the driver holds no CPU, only a `train_driver`
resource, so drivers never starve their own workers; `TuneReportCallback` forwards every epoch's report (val mAP
for ASHA, plus the model's measured cost) to Tune. The Train run is named after the trial id, so a retried or
restored trial continues its Train run from the last epoch checkpoint instead of starting over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import PipelineConfig, from_dict, override
from pipeline.tuning.space import SearchSpace, managed_values

DRIVER_RESOURCE = "train_driver"  # custom resource of the head node (cluster/): one slot per concurrent trial
TRIAL_RESOURCES = {"cpu": 0, DRIVER_RESOURCE: 1}  # a trial's driver; its Train workers ask for the real resources


@dataclass(frozen=True)
class SearchContext:
    """What every trial needs from the search (plain data: it travels to the trial's driver actor)."""

    name: str  # the search's name: its Tune experiment and its folder
    base: dict[str, Any]  # the base PipelineConfig as a dict, paths absolute, workers and GPU set
    space: SearchSpace
    max_epochs: int
    train_storage: str  # where the trials' Ray Train runs live (a local path or a URI)
    meta_dir: str  # local folder of the search's bookkeeping (child run ids)
    parent: tracking.RunHandle
    label_map: dict[str, Any]
    datasets: tuple[tracking.DatasetSplit, ...] = ()  # the MLflow dataset inputs of every trial's run

    def trial_config(self, params: dict[str, Any], trial_id: str) -> PipelineConfig:
        """The base config varied by this trial's sampled params, with the search's own settings on top."""
        managed = managed_values(
            max_epochs=self.max_epochs, trial_id=trial_id, train_storage=self.train_storage, search=self.name
        )
        return override(from_dict(self.base), {**self.space.overrides(params), **managed})

    def child_run_file(self, trial_id: str) -> Path:
        return Path(self.meta_dir) / "trials" / f"{trial_id}.json"


def child_run(ctx: SearchContext, config: PipelineConfig, trial_id: str, params: dict[str, Any]) -> tracking.RunHandle:
    """The trial's MLflow run, a child of the search's run; continued (not duplicated) when the trial restarts."""
    record = ctx.child_run_file(trial_id)
    if record.is_file():
        return tracking.resume_run(tracking.RunHandle.load(record))
    tags = {
        "mlflow.parentRunId": ctx.parent.run_id,
        "pipeline.job": "tune-trial",
        "tune.search": ctx.name,
        "tune.trial_id": trial_id,
        **{f"tune.param.{key}": str(value) for key, value in params.items()},
    }
    return tracking.start_run(
        config, ctx.parent.tracking_uri, ctx.label_map, tags=tags, record=record, datasets=ctx.datasets
    )


def run_trial(params: dict[str, Any], ctx: SearchContext) -> None:
    """The trainable: fit this trial's Ray Train run; the callback reports each epoch to Tune."""
    from ray import tune
    from ray.train import TrainingFailedError
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.cluster.train import build_torch_trainer

    trial_id = tune.get_context().get_trial_id()
    config = ctx.trial_config(params, trial_id)
    if config.model.needs_fit or config.data.needs_fit:  # fitted to this trial's model (the space may set its size)
        from pipeline.data.analyze import fit_auto

        config, choices, _ = fit_auto(config)
        print(f"trial {trial_id}: " + "; ".join(f"{c.key}={c.value}" for c in choices), flush=True)
    run = child_run(ctx, config, trial_id, params)
    trainer = build_torch_trainer(config, trial_id, run, callbacks=[TuneReportCallback()], report_cost=True)
    try:
        trainer.fit()
    except TrainingFailedError:
        tracking.end_run(run, "FAILED")
        raise
    # the search closes every child run with its best epoch: a trial that ASHA stops never gets here
