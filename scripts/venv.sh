# Sourced by scripts/demo and scripts/test: make ./.venv with Python >= 3.11.
# On a fresh Debian machine the venv module needs the python3-venv package;
# as root we install it, otherwise we say how.
set -euo pipefail
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
    echo "custody: $PY not found; install Python 3.11 (Debian: apt-get install python3)" >&2
    exit 2
fi
if ! "$PY" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))'; then
    echo "custody: needs Python >= 3.11, found $("$PY" --version 2>&1)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    if ! "$PY" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "custody: installing Debian's python3-venv" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PY" -m venv .venv
        else
            echo "custody: python venv is missing; run: sudo apt-get install python3-venv" >&2
            exit 2
        fi
    fi
fi
