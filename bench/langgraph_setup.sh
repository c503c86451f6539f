#!/usr/bin/env bash
# Make bench/.venv-langgraph for the comparison in overhead.py. LangGraph is never a
# dependency of runner; it lives only in this virtualenv.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv-langgraph
.venv-langgraph/bin/pip install -q "langgraph>=0.2" "langgraph-checkpoint-sqlite>=2"
