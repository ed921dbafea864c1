"""HTTP API: routes, request schemas and dependencies."""
