"""clm_stage_engine."""
