"""Background jobs: retention purges on a schedule, run once per deployment under a lease."""
