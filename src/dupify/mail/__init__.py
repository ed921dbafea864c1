"""Email: the outbox table, SMTP delivery with retries, announcements and policy notices."""
