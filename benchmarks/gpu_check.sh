#!/usr/bin/env bash
# Mask R-CNN and U-Net speed on a GPU machine, in one run of under 7 minutes.
#
# Run from the repository root. It installs the wheels carried in .whl/ (the packages
# the jaxseg import chain needs that the GPU image lacks) into /tmp/site, prints the
# GPU and the versions, then runs, each under its own time limit within one overall
# deadline:
#   (a) benchmarks/mask_rcnn.py on configs/mask_rcnn_r50_fpn.py (batch 2, 512x512,
#       float32) against torchvision's Mask R-CNN on the same GPU,
#   (b) the same in bfloat16 (torch under bfloat16 autocast),
#   (c) benchmarks/unet_step.py (JAX only: its PyTorch reference runs on the CPU).
# Standard output goes to $OUT/gpu_results.txt (and the terminal); standard error to
# $OUT/gpu_stderr.txt, whose tail is copied into the results when a step fails.
#
# Wheels under .whl/if_missing/MODULE/ are installed only when `import MODULE` fails
# (matplotlib; protobuf when the image's is too old for tensorflow_metadata).
set -u -o pipefail

OUT=${OUT:-/tmp/gpu_check}
SITE=/tmp/site
RESULTS=$OUT/gpu_results.txt
ERRORS=$OUT/gpu_stderr.txt
DEADLINE=$((SECONDS + 405))
mkdir -p "$OUT"
: > "$RESULTS"
: > "$ERRORS"

# step LIMIT COMMAND...: echo the command, run it for at most LIMIT seconds (less when
# the deadline is nearer), report its exit status and go on whatever it was.
step() {
    local limit=$1
    shift
    local left=$((DEADLINE - SECONDS))
    if ((left < limit)); then
        limit=$left
    fi
    if ((limit <= 0)); then
        echo "+ skipped (deadline): $*" | tee -a "$RESULTS"
        return
    fi
    echo "+ [${limit}s] $*" | tee -a "$RESULTS"
    local start=$SECONDS
    local error_lines
    error_lines=$(wc -l < "$ERRORS")
    timeout -k 10 "$limit" "$@" 2>> "$ERRORS" | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    echo "+ exit status $status after $((SECONDS - start))s" | tee -a "$RESULTS"
    if ((status != 0)); then
        echo "+ last lines of standard error:" | tee -a "$RESULTS"
        tail -n "+$((error_lines + 1))" "$ERRORS" | tail -n 20 | tee -a "$RESULTS"
    fi
}

INSTALL=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
         --target "$SITE")
step 60 "${INSTALL[@]}" .whl/*.whl
for group in .whl/if_missing/*/; do
    module=$(basename "$group")
    if ! PYTHONPATH=$SITE python3 -c "import $module" 2> /dev/null; then
        step 60 "${INSTALL[@]}" "$group"*.whl
    fi
done
export PYTHONPATH=$SITE:$PWD
# JAX preallocates 75% of the GPU by default; leave room for torch in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.5

step 10 nvidia-smi -L
step 60 python3 -c "
import jax, jaxlib, flax, optax, torch, torchvision
print('python', __import__('sys').version.split()[0], '| jax', jax.__version__,
      '| jaxlib', jaxlib.__version__, '| flax', flax.__version__, '| optax', optax.__version__)
print('torch', torch.__version__, '| torchvision', torchvision.__version__,
      '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version())
print('jax devices', jax.devices())
"

MASK_RCNN=(python3 benchmarks/mask_rcnn.py --config=configs/mask_rcnn_r50_fpn.py
           --config.model.fast_cpu_ops=False --torch --json)
step 190 "${MASK_RCNN[@]}"
step 160 "${MASK_RCNN[@]}" --config.model.dtype=bfloat16
step 90 python3 benchmarks/unet_step.py --no_torch --repeats=10
echo "+ done in ${SECONDS}s" | tee -a "$RESULTS"
