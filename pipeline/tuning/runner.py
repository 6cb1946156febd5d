"""The Ray side of a search: connect with a `train_driver` resource, build (or restore) the Tuner with ASHA and the
search algorithm, fit, and read every trial's outcome back as a leaderboard row."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig
from pipeline.tuning.leaderboard import TrialRow, row_from_history
from pipeline.tuning.trial import DRIVER_RESOURCE, TRIAL_RESOURCES, SearchContext, run_trial

TABLE_METRICS = ("epoch", "val_AP", "val_AP50", "train_loss", "gflops", "latency_ms")
TERMINAL = ("TERMINATED", "ERROR")


@dataclass
class TrialOutcome:
    rows: list[TrialRow]
    interrupted: bool  # some trial did not end (Ctrl+C): `--resume` continues the search
    experiment_path: str


def fit_search(ctx: SearchContext, options, config: PipelineConfig, experiment_path: str) -> TrialOutcome:
    """Run (or resume) the search on Ray and return one row per trial."""
    import ray

    from pipeline.cluster.runtime import init_ray

    # the same checks as train (workers fit, storage and tracking every node reaches); a Ray started here gets
    # one trial-driver slot per CPU
    started = init_ray(config, ctx.parent.tracking_uri, local_resources={DRIVER_RESOURCE: os.cpu_count() or 1})
    try:
        concurrency = _concurrency(config, options)
        print(f"search {ctx.name}: up to {concurrency} trial(s) at a time; Tune experiment {experiment_path}")
        _tuner(ctx, options, config, experiment_path, concurrency).fit()
        return read_outcome(experiment_path, options.max_epochs)
    finally:
        if started:
            ray.shutdown()


def _concurrency(config: PipelineConfig, options) -> int:
    """Trials at once: what the cluster's CPUs/GPUs and driver slots fit, capped by --max-concurrent-trials."""
    from pipeline.cluster.storage import reachable_resources

    have = reachable_resources()  # an autoscaling cluster counts what it may grow to
    drivers = int(have.get(DRIVER_RESOURCE, 0))
    if drivers < 1:
        raise ConfigError(
            f"the Ray cluster has no {DRIVER_RESOURCE!r} resource for the trials' drivers: start its head node with "
            f"--resources='{{\"{DRIVER_RESOURCE}\": 4}}' (the definitions in cluster/ do)"
        )
    from pipeline.cluster.runtime import run_cpus

    workers = config.ray.num_workers
    fits = [drivers, int(have.get("CPU", 0) // run_cpus(config))]  # each trial's workers (and Ray Data task)
    gpus = f" + {config.ray.gpus_per_worker:g} GPU" if config.ray.use_gpu else ""
    if config.ray.use_gpu:  # fractional GPUs: trials side by side on one GPU
        fits.append(int(have.get("GPU", 0) // (workers * config.ray.gpus_per_worker)))
    need = f"{workers} worker(s) x {config.ray.cpus_per_worker} CPU{gpus}"
    if min(fits) < 1:
        raise ConfigError(f"one trial needs {need}; the cluster has {dict(have)} (lower --workers-per-trial)")
    return min(fits + [options.max_concurrent_trials or drivers])


def _search_algorithm(options, seed: int, concurrency: int):
    if options.algorithm == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as e:
            raise ConfigError(f"--algorithm optuna needs the optuna extra: pip install -e '.[optuna]' ({e})") from None
        # multi-objective TPE: accuracy up, compute down (ASHA still stops on the accuracy alone)
        return OptunaSearch(metric=[options.metric, "gflops"], mode=["max", "min"], seed=seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies max_concurrent_trials to its own default generator only, not to one passed in
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def _tuner(ctx: SearchContext, options, config: PipelineConfig, experiment_path: str, concurrency: int):
    from ray import tune

    from pipeline.tuning.scheduler import ResumableASHA

    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_RESOURCES)
    if options.resume and tune.Tuner.can_restore(experiment_path):
        print(f"resuming search {ctx.name}: finished trials are kept, unfinished and errored ones continue")
        return tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True)
    reporter = tune.CLIReporter(
        metric_columns=list(TABLE_METRICS),
        parameter_columns=list(ctx.space.dimensions),
        max_report_frequency=30,
        sort_by_metric=True,
        metric=options.metric,
        mode="max",
    )
    scheduler = ResumableASHA(
        state_file=str(Path(ctx.meta_dir) / "asha_state.pkl"),
        time_attr="epoch",
        metric=options.metric,
        mode="max",
        max_t=options.max_epochs,
        grace_period=options.grace_period,
        reduction_factor=options.reduction_factor,
        stop_last_trials=False,  # a trial that reaches max_epochs ends on its own, its Train run complete
    )
    storage, _, name = experiment_path.rpartition("/")
    return tune.Tuner(
        trainable,
        param_space=ctx.space.param_space(),
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=_search_algorithm(options, config.train.seed, concurrency),
            num_samples=options.num_samples,
            # a Searcher (Optuna) is capped by Tune; our variant generator caps itself (Tune warns otherwise)
            max_concurrent_trials=concurrency if options.algorithm != "random" else None,
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage, progress_reporter=reporter, verbose=1),
    )


def read_outcome(experiment_path: str, max_epochs: int) -> TrialOutcome:
    """One row per trial, from the experiment state Tune saved (what `--resume` would continue from): a trial
    still RUNNING or PENDING there was cut short by Ctrl+C, whatever Tune's in-memory results say after cleanup."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes  # trial id -> every epoch it reported
    rows, interrupted = [], False
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        history = frame.to_dict("records") if frame is not None and not frame.empty else []
        if trial.status not in TERMINAL:
            interrupted, status = True, "pending"
        elif trial.status == "ERROR":
            status = "error"
        else:
            reached = max((int(m.get("epoch", 0) or 0) for m in history), default=0)
            status = "finished" if reached >= max_epochs else "stopped early"
        rows.append(row_from_history(trial.trial_id, dict(trial.config), history, status))
    return TrialOutcome(rows, interrupted, experiment_path)
