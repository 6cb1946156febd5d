"""The training loop in plain PyTorch (no Ray, no MLflow): optimizer and schedule, EMA, checkpoints, evaluation.

`loop.fit` trains in one process; `pipeline.ray_train` runs the same loop on every Ray Train worker.
"""
