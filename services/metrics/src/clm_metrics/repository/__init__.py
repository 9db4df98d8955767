"""All SQL of the metrics service, reads apart from writes. Repositories never commit: the
caller (the consumer's micro-batch, a request, the pruner) owns the transaction.

* :mod:`.rows`: the keys rows are written under (pure);
* :mod:`.bucket_writes`: a batch's claims, bucket sums, rollups, versions and stage counts;
* :mod:`.distinct_writes`: customer numbers and the distinct sets (and profiles leaving them);
* :mod:`.activity_writes`: per-ticket states and cohort activity;
* :mod:`.pruning`: the retention policy;
* :mod:`.reads`: sums, distinct sets, write counters and cohorts, for the KPIs;
* :mod:`.predictions`: the current model and customers' purchase facts, through the
  prediction read model, for the predictive KPIs;
* :mod:`.segment_reads`: segments and their membership spans, through the segments' read
  model, for the segment KPIs and gauges.
"""
