#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root, or with sudo available):
#   ./run.sh demo   -> installs what is missing, then runs `guichet demo` (simulated PBX, callers and agents)
#   ./run.sh test   -> installs what is missing, then runs ruff, mypy and the whole pytest suite
#   ./run.sh bench  -> installs what is missing, then prints the benchmark table
# Extra arguments after the verb are passed on (e.g. ./run.sh demo --speed 5, ./run.sh test -k agi).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${GUICHET_VENV:-.venv}
# Debian packages each verb needs (installed only when missing).
DEB_BASE=(python3 python3-venv python3-dev gcc)
DEB_TEST=(espeak-ng sox redis-server sip-tester)  # prompt synthesis; Redis for the live state store tests; SIPp

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_debs() {
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    # python3 may come from elsewhere (pyenv): only insist on Debian's when no usable venv module exists.
    if python3 -c 'import ensurepip, venv' 2>/dev/null; then
        local keep=()
        for pkg in "${missing[@]}"; do
            case "$pkg" in python3|python3-venv|python3-dev) ;; *) keep+=("$pkg") ;; esac
        done
        missing=("${keep[@]}")
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_venv() {
    local stamp="$VENV/.guichet-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing Python packages (pip install -e .[dev,speech])"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e '.[dev,speech]'
        touch "$stamp"
    fi
}

verb=${1:-}
[ $# -gt 0 ] && shift
case "$verb" in
    demo)
        ensure_debs "${DEB_BASE[@]}"
        ensure_venv
        exec "$VENV/bin/guichet" demo "$@"
        ;;
    test)
        ensure_debs "${DEB_BASE[@]}" "${DEB_TEST[@]}"
        ensure_venv
        echo "==> ruff"
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        echo "==> mypy"
        "$VENV/bin/mypy"
        echo "==> pytest"
        exec "$VENV/bin/pytest" "$@"
        ;;
    bench)
        ensure_debs "${DEB_BASE[@]}"
        ensure_venv
        exec "$VENV/bin/python" -m bench "$@"
        ;;
    *)
        echo "usage: ./run.sh demo|test|bench [args...]" >&2
        exit 2
        ;;
esac
