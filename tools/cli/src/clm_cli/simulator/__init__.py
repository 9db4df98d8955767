"""The journey simulator behind ``clm simulate``: generated journeys, their truth, senders.

- :mod:`.journeys`: a seeded mixed journey set (the tests' and benchmarks' fixture data);
- :mod:`.truth`: brute-force truth of a journey set (stages as of an instant, KPIs per window).
"""
