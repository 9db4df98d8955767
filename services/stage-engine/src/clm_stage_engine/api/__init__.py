"""HTTP routers of the stage engine."""
