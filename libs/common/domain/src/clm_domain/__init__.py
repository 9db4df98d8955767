"""CLM Stream's pure domain: what an event is, how a customer moves through the lifecycle,
what a lifecycle record says, and the vocabulary of the KPI math. No I/O: plain data in,
plain data out."""
