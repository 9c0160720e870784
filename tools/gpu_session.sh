#!/usr/bin/env bash
# The GPU checks (issues 3, 4 and 15) as one command for a lent GPU machine (see the library's
# device README): prepare here with `bash tools/gpu_wheels.sh`, then run there with
#   run(command="bash tools/gpu_session.sh", carry=[".whl"], timeout_s=540)
# Logs and a one-screen summary.txt land in $OUT (or ./gpu-session-out here). Budget: under 8 min
# of device time (each step has its own timeout; their sum is 450 s plus the set-up).
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
# issue 15: the model's ceiling, eager, with a profile of 5 steps (op table + convolution share),
# then 300 steps streaming real shards (crops cut on the GPU: data.augment_on_device in the preset)
timeout 150 python3 tools/gpu_check.py --real-steps 300 --profile-steps 5 2>&1 | tee "$out/gpu_check.txt"
# the same ceiling with the trunk compiled, and with per-GPU batch 128 (LR scales with the batch)
timeout 120 python3 tools/gpu_check.py --skip-real --set compile=true 2>&1 | tee "$out/gpu_check_compile.txt"
timeout 45 python3 tools/gpu_check.py --skip-real --set data.batch_size=128 2>&1 | tee "$out/gpu_check_b128.txt"
# SwAV step vs lightly on CUDA, same precision (resnet18 b32, then ResNet-50 b64)
timeout 60 python3 tools/bench_pretrain.py --device cuda --skip pipeline --steps 10 2>&1 | tee "$out/bench_pretrain_cuda.txt"
timeout 60 python3 tools/bench_pretrain.py --device cuda --skip pipeline --steps 10 --arch resnet50 --batch 64 \
    2>&1 | tee -a "$out/bench_pretrain_cuda.txt"
# curate with the detector on CUDA vs the detector alone
timeout 120 python3 tools/bench_curate.py --skip part1 --device cuda --detect-count 300 --repeat-detect 2 \
    2>&1 | tee "$out/bench_curate_cuda.txt"
# one screen: the lines that carry the figures
{ cat "$out/env.txt"; echo
  grep -h -E "^\[(synthetic|shards|ratio|profile)\]" "$out"/gpu_check*.txt
  grep -h -E "ratio|img/s|x " "$out/bench_pretrain_cuda.txt" | tail -8
  grep -h -E "pipeline efficiency|curate: download|detector alone, pre" "$out/bench_curate_cuda.txt"; } \
    > "$out/summary.txt" 2>&1
cat "$out/summary.txt"
