"""The journey simulator behind ``clm simulate``: generated journeys, their truth, senders.

- :mod:`.personas`: realistic journeys, each customer following a persona meant for one stage;
- :mod:`.journeys`: a seeded mixed journey set (the tests' and benchmarks' fixture data);
- :mod:`.transactions`: a CSV of real transactions as purchase events, time shifted or
  compressed;
- :mod:`.truth`: brute-force truth of a journey set (stages as of an instant, KPIs per window);
- :mod:`.sender`: posting to the ingest (pacing, retries, refusals, progress).
"""
