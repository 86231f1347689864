#!/usr/bin/env bash
# Trains the exit file shipped with each bundled model (models/<model>.exit.json), from ../shared data:
# an SVM exit classifier on logit-lens features of 6000 positions drawn (seed 1) from
# ../shared/datasets/tinystories/train.txt (TinyStories validation stories 1-800), its threshold calibrated so
# that the exit token agrees with full depth on 99% of the held-out part of those examples; then eval-exit on
# ../shared/datasets/tinystories/valid.txt (stories 801-900, which neither the models nor the classifier saw).
# Run from the repository root after `npm ci`: scripts/train-bundled-exits.sh   (about three minutes per model)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/datasets
for gguf in models/*.f16.gguf; do
  out="${gguf%.f16.gguf}.exit.json"
  node dist/lib/cli/main.js train-exit -m "$gguf" --data "$DATA/tinystories/train.txt" --limit 6000 --seed 1 \
    --classifier svm --target 0.99 --threads 1 --out "$out"
  node dist/lib/cli/main.js eval-exit -m "$gguf" --data "$DATA/tinystories/valid.txt" --limit 1000 --seed 1 --threads 1 --exit "$out"
done
