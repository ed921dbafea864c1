"""Abuse prevention (PRIVACY row 8): suspension, the key-guessing throttle and spike flags."""
