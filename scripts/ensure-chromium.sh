#!/usr/bin/env bash
# Make sure the browser tests (tests/browser/) have a headless Chromium and a CJK font: install
# Debian's `chromium` and `fonts-wqy-microhei` when /usr/bin/chromium is missing and we are root.
# Never fails the build: without Chromium the browser tests skip with a reason (CI sets
# BATON_REQUIRE_BROWSER=1, so there a missing browser fails those tests instead).
# Never runs `playwright install`: the tests drive this system Chromium.
set -u
CHROMIUM=${BATON_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ] && fc-list 2>/dev/null | grep -qi "WenQuanYi Micro Hei"; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: $CHROMIUM (or the CJK font) is missing and this is not a root Debian shell:" \
       "run 'apt-get install -y chromium fonts-wqy-microhei' as root, or the browser tests will skip." >&2
  exit 0
fi
echo "installing chromium and fonts-wqy-microhei for the browser tests ..."
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null 2>&1 \
    || echo "note: could not install chromium: the browser tests will skip." >&2
fi
exit 0
