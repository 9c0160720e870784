#!/usr/bin/env bash
# Fetch, here, the wheels a GPU machine lacks for `tools/gpu_session.sh` into .whl/ (git-ignored).
# The lent machines run Python 3.12 with torch, torchvision, OpenCV, numpy, Pillow, scipy, urllib3,
# requests, PyYAML and tqdm already installed and cannot reach a package index; curate's
# pipeline and the SwAV trainer need only the first three of these besides, bench_pretrain's
# comparison also lightly (installed without its dependencies, as bench_pretrain does here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    webdataset==0.2.111 braceexpand==0.1.7 facenet-pytorch==2.6.0 lightly==1.6.0
ls -la .whl
