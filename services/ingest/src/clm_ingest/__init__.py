"""clm_ingest."""
