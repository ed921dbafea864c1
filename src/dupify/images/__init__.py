"""Image input: the three request forms read with caps, the decoding policy, and the worker pool
that runs per-image work off the event loop."""
