"""CLM Stream's infrastructure: settings, Postgres (engine, schema, offsets) and Kafka
(clients, the micro-batch consumer, the worker supervisor) plumbing the services share."""
