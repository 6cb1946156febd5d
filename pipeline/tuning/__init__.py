"""Scaling and hyperparameter search with Ray Tune over Ray Train (`run_pipeline.py tune`).

Owns: `space` (YAML spaces resolved against the config), `trial` (the Tune trainable that fits one Train run),
`scheduler` (ASHA that survives a restore), `runner` (Tuner, concurrency, outcome), `leaderboard` (ranking and
Pareto fronts), `search` (the whole search). May import every layer below it: `pipeline.cluster` (Train runs, Ray
start-up), `pipeline.registry` (the best trial's registration), `pipeline.plan`, `pipeline.tracking` and down.
"""

from pipeline.tuning.search import SearchOptions, SearchOutcome, run_search
from pipeline.tuning.space import SearchSpace, load_space

__all__ = ["SearchOptions", "SearchOutcome", "SearchSpace", "load_space", "run_search"]
