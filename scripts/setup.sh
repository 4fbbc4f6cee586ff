#!/usr/bin/env bash
# Install what dpdb needs on a fresh Debian machine (idempotent):
# PostgreSQL 15 with q3c and pg_sphere from Debian, and a virtualenv in .venv
# with dpdb and its test dependencies. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(postgresql-15 postgresql-client-15 postgresql-15-q3c postgresql-15-pgsphere stilts pgbackrest
          chromium chromium-driver)  # the portal's browser tests (Playwright drives /usr/bin/chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
