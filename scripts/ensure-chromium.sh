#!/usr/bin/env bash
# Install Debian's Chromium for the portal's browser test, if it is missing (idempotent).
# Playwright drives this binary (executable_path); Playwright's own browser download is never used.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
echo "installing Debian's chromium for tests/portal/test_browser.py"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
