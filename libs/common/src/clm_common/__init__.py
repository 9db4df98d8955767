"""clm_common."""
