"""Reference figures for the load generator's aggregation test
(crates/switchyard-bench/src/load/stats.rs): the same records summed up with numpy.

    ~/.cache/switchyard/venv-ref/bin/python scripts/bench/load_stats_reference.py
"""

import numpy as np

# (sent, text-chunk arrival times, done, output tokens, lost)
records = [
    (0.0, [0.5, 0.6, 0.75, 0.8], 0.81, 4, False),
    (0.1, [0.9, 1.0, 1.3], 1.35, 3, False),
    (0.2, [1.1], 2.0, 1, True),
]
kept = [r for r in records if not r[4]]
wall = max(r[2] for r in records)
rate = sum(r[3] for r in kept) / wall
ttft = [r[1][0] - r[0] for r in kept]
itl = np.concatenate([np.diff(r[1]) for r in kept])
print("tokens/s, TTFT p50/p99, ITL p50/p99:",
      [float(rate)] + [float(np.percentile(v, p)) for v in (ttft, itl) for p in (50, 99)])

x = [((i * 37) % 101) / 7 for i in range(50)]
print("percentiles 0/50/90/99/100:", [float(np.percentile(x, p)) for p in (0, 50, 90, 99, 100)])
print("one sample, p99:", float(np.percentile([3.5], 99)))
print("numpy", np.__version__)
