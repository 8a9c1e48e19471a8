#!/usr/bin/env bash
# Creates .venv and installs shopmesh into it (editable) with the given extra,
# e.g. `scripts/setup.sh test`. Re-running is cheap: nothing is reinstalled
# unless pyproject.toml changed. Prints the venv's python path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRA="${1:-dev}"
VENV="${SHOPMESH_VENV:-$ROOT/.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  echo "setup: Python 3.11 or newer is required" >&2
  exit 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV" >&2
  "$(find_python)" -m venv "$VENV"
fi

stamp="$VENV/.shopmesh-$EXTRA"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing shopmesh[$EXTRA] into $VENV" >&2
  # pip's and setuptools' own chatter (the editable-install warning) goes to a log, shown if it fails.
  log="$VENV/.install-$EXTRA.log"
  # Editable: code changes apply at once; a new package means a pyproject.toml
  # change, which re-runs this install.
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRA]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: installing shopmesh[$EXTRA] failed (above; also in $log)" >&2
    exit 1
  fi
  echo "setup: installed (pip's log: $log)" >&2
  echo "$want" >"$stamp"
fi

# Regenerate the stubs if someone changed protos/ without regenerating.
if ! "$VENV/bin/python" "$ROOT/scripts/generate.py" --check >/dev/null; then
  echo "setup: protos/ changed; regenerating generated/" >&2
  "$VENV/bin/python" "$ROOT/scripts/generate.py"
fi
echo "$VENV/bin/python"
