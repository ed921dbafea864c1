"""The data lifecycle the privacy policy promises: export, deletion, retention, policy versions."""
