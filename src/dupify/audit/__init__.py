"""The security audit log: one row per security event, visible to operators."""
