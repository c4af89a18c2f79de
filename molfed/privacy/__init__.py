"""Differential privacy below the engine: sample-level DP-SGD (:mod:`.dpsgd`), accounting (:mod:`.accountant`) and
the membership-inference check (:mod:`.membership`). The strategy wrappers that use them (client-level DP, the
budget) sit in the engine's layer: :mod:`molfed.federated.dp_client`, :mod:`molfed.federated.dp_budget`."""

DP_NOISE_MULTIPLIER = "dp_noise_multiplier"
"""``fit_options`` key: sample-level DP-SGD noise multiplier sigma (absent: no DP-SGD)."""
DP_MAX_GRAD_NORM = "dp_max_grad_norm"
"""``fit_options`` key: DP-SGD per-graph gradient L2 bound C (sent with ``dp_noise_multiplier``)."""
DP_NOISE_SEED = "dp_noise_seed"
"""``fit_options`` key: a reproducible DP-SGD noise seed (absent: the partner draws noise from its OS)."""
