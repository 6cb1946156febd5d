"""Everything that runs on Ray: the cluster a job connects to, Ray Train runs, interruptions, storage checks, Ray
Jobs submission and batch prediction with Ray Data.

Owns: `runtime` (start or connect to Ray, resources, harmless start-up chatter kept out), `storage` (shared
storage and tracking-store checks on multi-node clusters), `interrupts` (SIGTERM -> a graceful stop, preemption
notices), `worker` (the per-worker training function) and `train` (the driver: TorchTrainer, resume by identity,
final report), `submission` (the Ray Jobs SDK behind `run_pipeline.py submit`), `batch_predict` (a registered
model over a folder or bucket of images through a Ray Data actor pool).
May import: the plain layers below it (`pipeline.plan`, `pipeline.registry`, `pipeline.tracking`,
`pipeline.training`, `pipeline.evaluation`, `pipeline.data`, `pipeline.config`), Ray and MLflow. Search
(`pipeline.tuning`) and the CLI build on it.
"""
