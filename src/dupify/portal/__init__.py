"""The developer portal: server-rendered pages with sessions, CSRF and security headers."""
