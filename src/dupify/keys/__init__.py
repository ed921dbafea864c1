"""API keys: format, hashing, storage and verification."""
