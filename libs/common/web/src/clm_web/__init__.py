"""CLM Stream's HTTP plumbing: problem+json errors, bearer-key auth, request limits, health
and Prometheus routes, and serving an app under uvicorn."""
