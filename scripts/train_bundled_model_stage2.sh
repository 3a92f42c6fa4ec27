#!/bin/bash
# Stage 2 of the bundled model gpt2np-mini: a warm restart of stage 1's weights (scripts/train_bundled_model.sh,
# WORK/gpt2np-small.npz): 2,000 more steps at a third of its peak learning rate (1e-3, to 1e-4) and other batches
# (seed 1), into WORK/gpt2np-mini.npz. Resumable: bash scripts/train_bundled_model_stage2.sh --resume.
# Then: python scripts/make_bundled_model.py WORK/gpt2np-mini.npz --after WORK/gpt2np-small.npz
# It keeps a copy of itself as WORK/gpt2np-mini.sh, where make_bundled_model.py reads the command.
set -euo pipefail
WORK=${WORK:-$HOME/.cache/gpt2np-train/bundled}
CORPUS=${CORPUS:-$HOME/.cache/gpt2np-corpus/corpus/train}
INIT=(--init "$WORK/gpt2np-small.npz")  # a resumed run continues its checkpoint's weights instead
for arg in "$@"; do [ "$arg" = --resume ] && INIT=(); done
cp "$0" "$WORK/gpt2np-mini.sh"
cd "$WORK"
exec gpt2np train $(ls "$CORPUS"/*.txt | sort) \
  "${INIT[@]}" --out "$WORK/gpt2np-mini.npz" --steps 2000 --batch-size 8 --seq-len 256 \
  --lr 1e-3 --min-lr 1e-4 --warmup 100 --weight-decay 0.1 --seed 1 \
  --eval-every 250 --eval-windows 32 --save-every 250 "$@"
