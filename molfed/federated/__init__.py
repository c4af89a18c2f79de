"""Federation logic: what travels (weights, updates), pure aggregation, strategies, partner-side work."""
