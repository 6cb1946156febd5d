"""Everything that runs a job: data, training loop, evaluation, Ray orchestration, MLflow tracking and registry.

One sub-package per layer, each importing only the layers below it (docs/ARCHITECTURE.md, "Layers"; the contracts
are `[tool.importlinter]` in pyproject.toml): cli > tuning > cluster > registry | plan > tracking | training >
evaluation > data > config > uri.
"""

import time

# when this process first imported the pipeline (before torch, Ray or MLflow): a training job's `train.minutes`
# budget counts from here, so its whole wall time, start-up included, is what the budget bounds
PROCESS_STARTED = time.time()
