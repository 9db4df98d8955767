"""``make bench``: benchmarks run side by side on the same machine, results in bench/RESULTS.md."""
