"""A job planned in the driver before anything runs: `job.resolve_job(config) -> ResolvedJob` (paths absolute,
model, tracking store and dataset checked, `auto` values fitted, schedule and bounded augmentation) and
`header.header_lines(job)`, the run header.

May import: `pipeline.tracking` (the store check, the dataset inputs), `pipeline.training` (schedule, device
notes), `pipeline.data`, `pipeline.config`, `effdet_core`; never Ray. `train` (`pipeline.cluster.train`) and
search (`pipeline.tuning`) start from its `ResolvedJob`.
"""
