#!/usr/bin/env bash
# One command on a fresh machine: make the virtual environment, install the project with its test
# extras, run the whole test suite. Extra arguments go to pytest (e.g. ./test.sh -k tokenizer).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Installing is a no-op when the environment is already complete.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest "$@"
