"""Per-key rate limits, monthly quotas and the 24-hour result cache, on Redis or in process."""
