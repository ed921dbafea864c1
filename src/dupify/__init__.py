"""Dupify: a self-hostable image embedding and analysis API whose privacy policy is kept by code."""

__version__ = "0.1.0"
