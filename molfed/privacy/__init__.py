"""Differential privacy: sample-level DP-SGD (:mod:`.dpsgd`), client-level DP (:mod:`.client`), accounting
(:mod:`.accountant`), the budget (:mod:`.budget`) and the membership-inference check (:mod:`.membership`)."""
