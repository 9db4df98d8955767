"""The stage engine's operations, called by the Kafka handler, the HTTP endpoints and the
workers alike: apply a batch, merge, erase, sweep. The caller owns the transaction."""
