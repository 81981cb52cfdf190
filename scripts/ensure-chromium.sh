#!/usr/bin/env bash
# The browser test drives Debian's Chromium through Playwright (Playwright's own browser download needs a
# network this project does not assume). Install it when missing and we may; otherwise the test skips,
# except under CI=true, where it fails.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (apt-get) for the browser test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will not run"
else
  echo "note: chromium not found and not root; the browser test will be skipped (install Debian's chromium)"
fi
exit 0
