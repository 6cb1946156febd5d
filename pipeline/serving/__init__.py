"""Online serving of registered versions on Ray Serve (`run_pipeline.py serve`).

Owns: `options` (ServeOptions: flags and config-file args, checked), `requests` (what a request may carry, its 4xx
refusals), `follow` (the version served, following the registry's alias), `responses` (the JSON schema), `app` (the
Serve deployment: FastAPI ingress, dynamic batching, autoscaling). May import: `pipeline.registry`,
`pipeline.evaluation`, `pipeline.data`, `pipeline.config`, Ray Serve (in `app` only) and FastAPI.
"""
