#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, then runs every layer:
# static checks, unit, module (Ansible against localhost) and integration (real Debian 12/13 hosts booted
# with systemd-nspawn; needs root). Extra arguments go to pytest, e.g. `bash tests/run.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DLSETUP_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'

# System tools for the integration layer and the browser test (Debian/Ubuntu machine, as root).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v ip >/dev/null || need+=(iproute2)
    command -v ssh >/dev/null || need+=(openssh-client)
    # the stand-ins of NVIDIA's repository (tests/integration/standin.py): signing key, .deb files
    command -v gpg >/dev/null || need+=(gpg)
    command -v gpgconf >/dev/null || need+=(gpgconf)
    command -v dpkg-deb >/dev/null || need+=(dpkg)
    # dlsetup report's page rendered in a real browser (tests/modules/test_report_browser.py)
    command -v chromium >/dev/null || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
    fi
fi

export PATH="$PWD/$VENV/bin:$PATH"
echo "== ruff"; ruff check dlsetup tests roles benchmarks
echo "== mypy"; mypy
echo "== pytest"
# pytest's own temp folders go where they are removed afterwards, not left under /tmp/pytest-of-$USER
basetemp=$(mktemp -d)
trap 'rm -rf "$basetemp"' EXIT
pytest -m "not gpu and not slow_wheels" --basetemp="$basetemp/pytest" "$@"
