"""The journey simulator and the KPI oracle: generated journeys and their truth.

- :mod:`.personas`: realistic journeys, each customer following a persona meant for one stage
  (what ``clm simulate`` sends);
- :mod:`.journeys`: a seeded mixed journey set (the tests' and benchmarks' fixture data);
- :mod:`.transactions`: a CSV of real transactions as purchase events, time shifted or
  compressed;
- :mod:`.truth`: brute-force truth of a journey set (stages as of an instant, KPIs per window);
- :mod:`.survivors`: the events that survive merges and erasures, and whose each one is.

Posting events to the ingest is the operator CLI's (:mod:`clm_cli.sender`).
"""
