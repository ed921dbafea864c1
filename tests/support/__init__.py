"""Helpers the test suite shares: servers, sample images, the SMTP sink, Redis, portal helpers."""
