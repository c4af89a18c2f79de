"""Which aggregation strategies each privacy mode can run with (no heavy imports: the config checks these)."""

#: Strategies that only need the (noisy) mean update, so client-level DP can feed them one pseudo-update.
CLIENT_DP_STRATEGIES = ("fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedyogi")
#: Strategies whose partner-side extras would be computed from private data without noise.
NO_SAMPLE_DP_STRATEGIES = ("qfedavg", "scaffold")
