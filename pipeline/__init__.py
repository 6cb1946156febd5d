"""Everything that runs a job: data, training loop, evaluation, Ray orchestration, MLflow tracking."""
