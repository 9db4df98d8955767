"""``clm``: the operator's command line for CLM Stream."""
