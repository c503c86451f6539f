#!/usr/bin/env bash
# Make the two virtualenvs bench/engines.py compares runner against: bench/.venv-langgraph
# (LangGraph with its SQLite checkpointer) and bench/.venv-dbos (DBOS). Neither engine is
# ever a dependency of runner; each lives only in its own virtualenv.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv-langgraph/bin/python ]; then
    python3 -m venv .venv-langgraph
fi
.venv-langgraph/bin/pip install -q "langgraph>=0.2" "langgraph-checkpoint-sqlite>=2"
if [ ! -x .venv-dbos/bin/python ]; then
    python3 -m venv .venv-dbos
fi
.venv-dbos/bin/pip install -q "dbos>=1"
