"""The HTTP server: the app, its process runtime, middleware, metrics and start-up services."""
