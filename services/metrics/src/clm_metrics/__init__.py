"""clm_metrics."""
