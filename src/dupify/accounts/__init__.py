"""Accounts: the people and teams that own API keys."""
