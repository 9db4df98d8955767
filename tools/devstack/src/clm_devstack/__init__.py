"""clm_devstack."""
