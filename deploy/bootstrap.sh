#!/usr/bin/env bash
# Idempotent installer for the vms project (used by the Makefile and CI).
#
#   deploy/bootstrap.sh [--dev]
#
# 1. Installs missing Debian packages (as root, or through sudo when available):
#      always:    python3 python3-venv python3-pip and the GStreamer RTSP server (the demo fleet's streams)
#      with --dev: postgresql redis-server chromium (the dashboard's tests run it headless) sip-tester (SIPp: the
#      GB/T 28181 tests play devices with it)
#    apt-get is skipped entirely when everything is already installed.
# 2. Creates .venv with a Python >= 3.11 if missing and installs the project into it:
#      --dev: pip install -e '.[dev]'      otherwise: pip install -e '.[postgres]'
#    The install is skipped when .venv/.installed is newer than pyproject.toml (and covers the extras).
set -euo pipefail

DEV=0
usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bootstrap: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
MIN_PY="3.11"
if [ "$DEV" = 1 ]; then EXTRAS="dev"; else EXTRAS="postgres"; fi

log() { echo "[bootstrap] $*"; }
die() { echo "[bootstrap] ERROR: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------ Debian packages

# The GStreamer RTSP server serves the demo fleet's streams (`vms run` with no camera configured) and the tests'.
PACKAGES=(
    python3 python3-venv python3-pip
    python3-gi gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-tools
)
if [ "$DEV" = 1 ]; then
    PACKAGES+=(postgresql redis-server chromium sip-tester)
fi

deb_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# A package counts as present when dpkg says so, or (for the servers) when its binaries are there.
pkg_present() {
    deb_installed "$1" && return 0
    case "$1" in
        postgresql) compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ;;
        redis-server) command -v redis-server >/dev/null 2>&1 ;;
        chromium) command -v chromium >/dev/null 2>&1 ;;
        sip-tester) command -v sipp >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        log "not a Debian-like system (no dpkg/apt-get): skipping system packages"
        return 0
    fi
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        pkg_present "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages: all present"
        return 0
    fi

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
            sudo=(sudo)
        else
            log "WARNING: missing Debian packages: ${missing[*]}"
            log "WARNING: not root and no usable sudo; install them with:"
            log "    apt-get install -y --no-install-recommends ${missing[*]}"
            return 0
        fi
    fi
    log "installing Debian packages: ${missing[*]}"
    # apt/dpkg output goes to a log that is shown only when something fails.
    local aptlog
    aptlog="$(mktemp "${TMPDIR:-/tmp}/vms-bootstrap-apt.XXXXXX")"
    log "apt-get update"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$aptlog" 2>&1; then
        cat "$aptlog" >&2; rm -f "$aptlog"; die "apt-get update failed"
    fi
    log "apt-get install --no-install-recommends ${missing[*]}"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}" >"$aptlog" 2>&1; then
        cat "$aptlog" >&2; rm -f "$aptlog"; die "apt-get install failed"
    fi
    rm -f "$aptlog"
    for pkg in "${missing[@]}"; do
        pkg_present "$pkg" || die "package $pkg still missing after apt-get install"
    done
    log "Debian packages installed"
}

# ---------------------------------------------------------------------------------------------------- venv

py_ok() {  # py_ok PYTHON: true when PYTHON runs and is >= MIN_PY
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in python3.11 python3 python3.13 python3.12; do
        if command -v "$candidate" >/dev/null 2>&1 && py_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python"; then
        log "virtualenv: $VENV ($("$VENV/bin/python" -V 2>&1))"
        return 0
    fi
    if [ -e "$VENV" ]; then
        log "virtualenv $VENV is broken or older than Python $MIN_PY: recreating it"
        rm -rf "$VENV"
    fi
    local python
    python="$(find_python)" || die "Python >= $MIN_PY not found (tried python3.11, python3, python3.13, python3.12); \
install it, e.g. apt-get install -y python3 python3-venv (Debian 12 ships 3.11)"
    log "creating virtualenv $VENV with $python ($("$python" -V 2>&1))"
    "$python" -m venv "$VENV" \
        || die "'$python -m venv' failed; on Debian install python3-venv (apt-get install -y python3-venv)"
}

# True when the stamp is newer than pyproject.toml and covers the requested extras ('dev' covers 'postgres').
install_up_to_date() {
    [ -f "$STAMP" ] && [ "$STAMP" -nt "$ROOT/pyproject.toml" ] || return 1
    local have
    have="$(cat "$STAMP" 2>/dev/null || true)"
    [ "$have" = "$EXTRAS" ] || [ "$have" = "dev" ]
}

install_project() {
    if install_up_to_date; then
        log "python packages: up to date ($(cat "$STAMP") extras; $STAMP newer than pyproject.toml)"
        return 0
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    log "upgrading pip"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    log "installing project: pip install -e '.[$EXTRAS]'"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
    echo "$EXTRAS" > "$STAMP"
    log "python packages installed"
}

log "project root: $ROOT (mode: $([ "$DEV" = 1 ] && echo dev || echo runtime))"
install_packages
ensure_venv
install_project
log "done"
