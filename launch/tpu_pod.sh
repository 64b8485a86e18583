#!/bin/bash
# jaxseg on a Cloud TPU VM pod slice: the same command on every worker of the slice, joined
# by JAX's own TPU detection (--distributed).
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/coco \
#       CONFIG=configs/mask_rcnn_coco.py launch/tpu_pod.sh --config.data.root=/mnt/coco
#
# Each worker needs this repository at ~/jaxseg with its environment (`make setup`), and
# the data where every worker reads it (a bucket mounted with gcsfuse, or a copy on each).
# Arguments after the script go to `jaxseg.main` (config overrides). A preempted slice
# (spot, maintenance) sends SIGTERM: jaxseg checkpoints and exits 0; running this script
# again on the recreated slice resumes from the newest checkpoint in WORKDIR.
set -euo pipefail
: "${TPU:?set TPU to the name of the TPU VM slice}"
: "${ZONE:?set ZONE to its zone}"
: "${WORKDIR:?set WORKDIR to a bucket path (gs://...) or a directory every worker shares}"
CONFIG="${CONFIG:-configs/mask_rcnn_coco.py}"

overrides=""
if [ "$#" -gt 0 ]; then
  printf -v overrides ' %q' "$@"
fi
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="cd ~/jaxseg && \
.venv/bin/python -m jaxseg.main --config=$CONFIG --workdir=$WORKDIR \
--distributed --config.model.fast_cpu_ops=False$overrides"
