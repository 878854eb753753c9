#!/usr/bin/env bash
# GPU check for scan triage: run on a machine with an NVIDIA GPU, from the repository root.
#
#   bash benchmarks/gpu_check.sh            # uses .venv, installs onnxruntime-gpu into it
#
# 1. swaps the CPU build of ONNX Runtime for onnxruntime-gpu (CUDA 12 + cuDNN 9 wheels from
#    PyPI; TensorRT 10 libraries are needed for the tensorrt provider);
# 2. prints the GPU and the providers ONNX Runtime offers;
# 3. runs `riskengine bench scanner` with the cuda and the tensorrt providers (batch 8, 200 scans)
#    and writes benchmarks/results/scanner_cuda_tauto_b8_40ft.json and
#    scanner_tensorrt_tauto_b8_40ft.json.
# A provider that cannot start makes its benchmark fail loudly (the bench refuses to report CPU
# numbers under a GPU label). Restore the CPU build afterwards with:
#   .venv/bin/pip uninstall -y onnxruntime-gpu && .venv/bin/pip install onnxruntime
set -uo pipefail

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
RE="$VENV/bin/riskengine"
SCANS=${SCANS:-200}
BATCH=${BATCH:-8}
MODEL_ARGS=()
if [[ -n "${MODEL:-}" ]]; then MODEL_ARGS=(--model "$MODEL"); fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi not found"

if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    "$VENV/bin/pip" uninstall -y onnxruntime
    # The [cuda,cudnn] extra pulls the CUDA 12 / cuDNN 9 runtime wheels from PyPI.
    "$VENV/bin/pip" install "onnxruntime-gpu[cuda,cudnn]" || "$VENV/bin/pip" install onnxruntime-gpu
fi
"$PY" - <<'EOF'
import onnxruntime as ort
print("onnxruntime", ort.__version__, "device", ort.get_device())
print("providers", ort.get_available_providers())
try:
    ort.preload_dlls()  # loads the CUDA/cuDNN libraries installed as Python wheels
except AttributeError:
    pass
EOF

status=0
for provider in cuda tensorrt; do
    out="benchmarks/results/scanner_${provider}_tauto_b${BATCH}_40ft.json"
    echo "== $provider -> $out"
    if ! "$RE" bench scanner --provider "$provider" --batch "$BATCH" --scans "$SCANS" --warmup 5 \
            --json --results-file "$out" "${MODEL_ARGS[@]}" > "/tmp/scanner_${provider}.json"; then
        echo "$provider benchmark failed (see the message above)"
        status=1
        continue
    fi
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('provider','providers_active','scans_per_s','model_only_scans_per_s','latency_ms_p50','latency_ms_p99','torch_eager_scans_per_s')})" "$out"
done
exit $status
