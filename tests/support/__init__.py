"""What the test suite shares: every fixture (fixtures.py) and the helpers: the app and its client
(api), settings, the CLI, servers, sample images, the SMTP sink, Redis, portal pages, a hand-moved
clock, waiting without sleeps, and the architecture checks' source reader."""
