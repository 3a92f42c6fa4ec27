#!/bin/bash
# Train the bundled model gpt2np-mini with gpt2np itself, in two stages. The shipped model
# (gpt2np/assets/gpt2np-mini/) came from these commands on the corpus of step 1 (its card records the exact
# commands; earlier runs are in docs/bundled_model.md).
#   1. python scripts/make_corpus.py --novels --war-and-peace   (the corpus, in ~/.cache/gpt2np-corpus)
#   2. bash scripts/train_bundled_model.sh          (stage 1, from GPT-2's initialisation: 1.5 to 3.7 h on
#                                                    2 cores, by machine; resumable: add --resume)
#   3. bash scripts/train_bundled_model_stage2.sh   (stage 2, a warm restart of stage 1's weights: about
#                                                    1 h; resumable: add --resume)
#   4. python scripts/make_bundled_model.py WORK/gpt2np-mini.npz --after WORK/gpt2np-small.npz
# WORK (default ~/.cache/gpt2np-train/bundled) is outside the repository: tokens, checkpoints and the
# CSVs go there, and a copy of this script as run.sh (where make_bundled_model.py reads the command).
set -euo pipefail
WORK=${WORK:-$HOME/.cache/gpt2np-train/bundled}
CORPUS=${CORPUS:-$HOME/.cache/gpt2np-corpus/corpus/train}
INIT=(--init new)  # a resumed run continues its checkpoint's weights instead
for arg in "$@"; do [ "$arg" = --resume ] && INIT=(); done
mkdir -p "$WORK"
cp "$0" "$WORK/run.sh"
cd "$WORK"
exec gpt2np train $(ls "$CORPUS"/*.txt | sort) \
  "${INIT[@]}" --n-layer 6 --n-head 4 --n-embd 128 --n-ctx 256 \
  --out "$WORK/gpt2np-small.npz" --steps 6000 --batch-size 8 --seq-len 256 \
  --lr 3e-3 --min-lr 3e-4 --warmup 200 --weight-decay 0.1 --seed 0 \
  --eval-every 250 --eval-windows 32 --save-every 250 "$@"
