# Sourced by tools/test and tools/demo: make a virtual environment with mcastcam in it.
#   ensure_apt CMD:PACKAGE ...   install the Debian packages whose command is missing (as root);
#                                CMD may be an absolute path (a file the package installs)
#   ensure_venv EXTRAS           create .venv (if needed) and pip install -e ".[EXTRAS]" into it
# Afterwards $PY is the environment's python and .venv/bin is first on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ensure_apt() {
  local missing=() pair
  for pair in "$@"; do
    if [[ ${pair%%:*} == /* ]]; then  # a file the package installs (e.g. a module)
      [ -e "${pair%%:*}" ] || missing+=("${pair#*:}")
    else
      command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} — install them with: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
}

ensure_venv() {
  local extras=$1
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/.venv" 2>/dev/null || {
      ensure_apt "python3.11-venv-probe:python3-venv" || true
      rm -rf "$ROOT/.venv"; python3 -m venv "$ROOT/.venv"
    }
  fi
  PY="$ROOT/.venv/bin/python"
  "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT${extras:+[$extras]}"
  export PATH="$ROOT/.venv/bin:$PATH"
}
