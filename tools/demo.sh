#!/usr/bin/env bash
# `make demo`: the whole facesift chain on the bundled sample data, on this machine's CPU.
# Each stage appends its part below; re-running resumes (every stage is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-work}
mkdir -p "$WORK"
SAMPLE=data/sample
export PYTHONUNBUFFERED=1

cleanup() { [ -n "${SANDBOX_PID:-}" ] && kill "$SANDBOX_PID" 2>/dev/null || true; }
trap cleanup EXIT

# ---- crawl (issue 2) ----

# ---- curate (issue 3) ----

# ---- pretrain (issue 4) ----

# ---- redundancy (issue 5) ----

# ---- finetune (issue 6) ----

echo "demo finished: outputs in $WORK/"
