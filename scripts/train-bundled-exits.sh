#!/usr/bin/env bash
# Trains the exit file shipped with each bundled model (models/<model>.exit.json), from ../shared data, as issue 14
# asks: a hidden-state probe (--features probe, --probe mlp, the default: a network of 64 tanh units shared by the
# layers over the decision row's hidden state and its lens statistics p1, gap, entropy) thresholded as the exit
# score, fitted on 32000 positions drawn (seed 1) from
# ../shared/datasets/tinystories/train.txt (TinyStories validation stories 1-800); its threshold calibrated on EVERY
# position of one half of ../shared/datasets/tinystories/valid.txt's stories (stories 801-900, document part 0/2,
# seed 1: ~18000 positions of 50 stories) so that the 95% lower bound of the agreement with full depth, counted over
# those stories (train-exit --bound documents, the default), is >= 99%; then eval-exit on the other half (part 1/2),
# stories that neither the models nor the classifier nor the calibration saw.
# Run from the repository root after `npm ci`: scripts/train-bundled-exits.sh   (about eight minutes per model on
# one core: reading 32000 + 18610 positions at full depth, and the MLP's training, ~3 min)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/datasets
for gguf in models/*.f16.gguf; do
  out="${gguf%.f16.gguf}.exit.json"
  node dist/lib/cli/main.js train-exit -m "$gguf" --data "$DATA/tinystories/train.txt" --limit 32000 --seed 1 \
    --calibration-data "$DATA/tinystories/valid.txt" --calibration-doc-part 0/2:1 \
    --classifier svm --features probe --target 0.99 --threads 1 --out "$out"
  node dist/lib/cli/main.js eval-exit -m "$gguf" --data "$DATA/tinystories/valid.txt" --doc-part 1/2:1 --limit 4000 --seed 1 \
    --threads 1 --exit "$out"
done
