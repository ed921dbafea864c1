"""Image input: the three request forms read with caps, and the decoding policy."""
