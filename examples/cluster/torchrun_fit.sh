#!/bin/bash
# Train a recipe with DDP on several machines without a scheduler: run this script on every node with its own
# NODE_RANK (0 on the node whose address is MASTER_ADDR). torchrun starts one process per device on each node.
#
#   MASTER_ADDR=10.0.0.1 NODE_RANK=0 NNODES=2 NPROC_PER_NODE=4 bash examples/cluster/torchrun_fit.sh   # node 0
#   MASTER_ADDR=10.0.0.1 NODE_RANK=1 NNODES=2 NPROC_PER_NODE=4 bash examples/cluster/torchrun_fit.sh   # node 1
#
# Extra arguments go to `lightning-gen fit` (e.g. `--trainer.max_steps 20000`). CONFIG picks the recipe,
# ACCELERATOR the device kind (gpu; cpu to try it on one machine with NPROC_PER_NODE=1 and two NODE_RANKs).
set -euo pipefail
CONFIG=${CONFIG:-configs/ddpm/mnist.yaml}
ACCELERATOR=${ACCELERATOR:-gpu}
NNODES=${NNODES:-2}
NPROC_PER_NODE=${NPROC_PER_NODE:-1}

python -m torch.distributed.run --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}" \
    -m lightning_gen.cli fit --config "$CONFIG" \
    --trainer.accelerator "$ACCELERATOR" \
    --trainer.devices "$NPROC_PER_NODE" \
    --trainer.num_nodes "$NNODES" \
    --trainer.strategy ddp \
    "$@"
