#!/usr/bin/env bash
# Set everything up, then run the demo or the tests.
#
#   ./scripts/dev.sh demo [serve options]   pygeoapi + a Prefect server, example config
#   ./scripts/dev.sh test [pytest options]  PostgreSQL, nginx, Chromium from apt if missing, lint
#                                           (ruff, mypy --strict), the docs site
#                                           (mkdocs build --strict), then the test suite
#
# Needs Python 3.12 or newer. It is looked for in $PYTHON, on PATH and under
# pyenv; none is downloaded. The virtual environment lives in .venv and is
# reinstalled when pyproject.toml changes.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv

is_supported() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null
}

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3.13 python3.12 python3)
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for version in "$pyenv_root"/versions/3.1[2-9]*; do
        [ -x "$version/bin/python" ] && candidates+=("$version/bin/python")
    done
    for candidate in "${candidates[@]}"; do
        local path
        path=$(command -v "$candidate" 2>/dev/null) || continue
        if is_supported "$path"; then
            echo "$path"
            return 0
        fi
    done
    echo "error: Python 3.12 or newer is needed (pygeoapi 0.24 requires it)." >&2
    echo "Install one (e.g. 'pyenv install 3.12') or point PYTHON at it." >&2
    return 1
}

setup() {
    if [ ! -x "$VENV/bin/python" ] || ! is_supported "$VENV/bin/python"; then
        local python
        python=$(find_python)
        echo "creating $VENV with $python ($("$python" --version))"
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        echo "installing pygeoapi-prefect and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,s3]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

# The tests start Debian's PostgreSQL (tests/postgres.py) and nginx
# (tests/test_auth.py) and drive Debian's Chromium (tests/browser.py); each
# comes from apt when missing.
test_services() {
    local missing=()
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
    command -v chromium >/dev/null || missing+=(chromium)
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "error: the tests need ${missing[*]} (Debian: apt-get install ${missing[*]})." >&2
        return 1
    fi
    echo "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

command=${1:-}
shift || true
case "$command" in
    demo)
        setup
        exec "$VENV/bin/pygeoapi-prefect" serve --config example-config.yml "$@"
        ;;
    test)
        test_services
        setup
        echo "ruff and mypy..."
        "$VENV/bin/ruff" check src tests benchmarks docs/hooks.py
        "$VENV/bin/ruff" format --check --quiet src tests benchmarks docs/hooks.py
        "$VENV/bin/mypy" src
        echo "docs site (mkdocs build --strict)..."
        site=$(mktemp -d)
        "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$site"
        rm -rf "$site"
        # Two processes, a test file each at a time (a file's module fixtures
        # stay in one process); "-n 0" in the options runs in one.
        exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile --durations=20 "$@"
        ;;
    *)
        echo "usage: $0 demo|test [options]" >&2
        exit 2
        ;;
esac
