"""The API request log: one row per request, written in batches."""
