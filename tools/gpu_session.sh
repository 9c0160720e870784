#!/usr/bin/env bash
# The GPU checks of issues 3 and 4 as one command for a lent GPU machine (see the library's
# device README): prepare here with `bash tools/gpu_wheels.sh`, then run there with
#   run(command="bash tools/gpu_session.sh", carry=[".whl"], timeout_s=540)
# Logs land in $OUT (or ./gpu-session-out here). Budget: ~5 min of device time (2 min measured on an H100
# before the bench_pretrain step was added).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-session-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc;
  python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())"; } \
    2>&1 | tee "$out/env.txt"
# issue 4: 100 synthetic gpu-r50 steps (bf16, channels_last) + 300 steps from real shards
# (crops cut on the GPU: data.augment_on_device in the preset)
timeout 300 python3 tools/gpu_check.py --real-steps 300 2>&1 | tee "$out/gpu_check.txt"
# issue 4 benchmark 1 on the GPU: SwAV step vs lightly (the issue's resnet18 setting, then ResNet-50)
timeout 120 python3 tools/bench_pretrain.py --device cuda --skip pipeline --steps 10 2>&1 | tee "$out/bench_pretrain_cuda.txt"
timeout 120 python3 tools/bench_pretrain.py --device cuda --skip pipeline --steps 10 --arch resnet50 --batch 64 \
    2>&1 | tee -a "$out/bench_pretrain_cuda.txt"
# issue 3 part 2: curate with the detector on CUDA vs the detector alone
timeout 180 python3 tools/bench_curate.py --skip part1 --device cuda --detect-count 300 --repeat-detect 2 \
    2>&1 | tee "$out/bench_curate_cuda.txt"
