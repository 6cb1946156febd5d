"""The training loop in plain PyTorch (no Ray, no MLflow): optimizer and schedule, EMA, checkpoints, evaluation.

`loop.fit` trains in one process; `pipeline.cluster.worker` runs the same loop on every Ray Train worker.
Owns, bottom up: `schedule`, `stream`, `checkpoint`, `ema`, `optim`, `device`, `distributed` (the DDP group's
rank and all-reduces), `inputs` (loaders of this rank), `trainer` (a process's moving parts, built and restored),
`cadence` (what follows each step), `evaluate`, `faults`, `cost`, `loop`, `progress` (progress lines), `report`
(the final evaluation of the best weights). May import: `pipeline.evaluation`, `pipeline.data`,
`pipeline.config`, `effdet_core`; never Ray, MLflow, tracking or anything above (`lint-imports` checks it).
"""
