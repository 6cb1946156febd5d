"""Scaling and hyperparameter search with Ray Tune over Ray Train (`run_pipeline.py tune`)."""

from pipeline.tuning.search import SearchOptions, SearchOutcome, run_search
from pipeline.tuning.space import SearchSpace, load_space

__all__ = ["SearchOptions", "SearchOutcome", "SearchSpace", "load_space", "run_search"]
