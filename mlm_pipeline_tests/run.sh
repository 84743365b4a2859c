#!/usr/bin/env bash
# The README's test command: sets up what the tests need on a fresh machine, then runs them all.
# Idempotent: a second run reuses the virtual environment and the installed browser.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

# The UI test drives Debian's Chromium (Playwright's own browser download cannot work offline).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi

# The code location loads and its definitions are valid, as `dg` (dagster-dg-cli) checks them.
VIRTUAL_ENV="$PWD/.venv" .venv/bin/dg check defs

exec .venv/bin/python -m pytest "$@"
