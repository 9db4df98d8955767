"""HTTP routers of the ingest."""
