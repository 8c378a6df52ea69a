#!/bin/bash
# Build the ignored folder .gpu/ that a lent GPU machine needs for GAN stages (see README.md here):
# the word LMDBs re-encoded at the GAN's height and gzipped, the checkpoint to resume, and wheels of
# the packages the device image lacks. Run from the repository root, on this machine:
#   tools/gpu/bundle.sh checkpoints/gan_v13/last.pt            # HEIGHT=32 TRAIN=... VAL=... to change
set -euo pipefail
START=${1:?usage: tools/gpu/bundle.sh START_CHECKPOINT}
HEIGHT=${HEIGHT:-32}; TRAIN=${TRAIN:-data/words/train.lmdb}; VAL=${VAL:-data/words/val.lmdb}
[ -f "$START" ] || { echo "bundle.sh: no checkpoint at $START" >&2; exit 2; }
for db in "$TRAIN" "$VAL"; do [ -f "$db/data.mdb" ] || { echo "bundle.sh: no LMDB at $db" >&2; exit 2; }; done
mkdir -p .gpu/whl
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for split in train val; do
  src=$TRAIN; [ $split = val ] && src=$VAL
  htr-build-lmdb --lmdb "$src" --height "$HEIGHT" --out "$tmp/$split.lmdb" --no-progress
  gzip -1 -c "$tmp/$split.lmdb/data.mdb" > ".gpu/${split}${HEIGHT}.mdb.gz.partial"
  mv ".gpu/${split}${HEIGHT}.mdb.gz.partial" ".gpu/${split}${HEIGHT}.mdb.gz"
done
cp "$START" .gpu/start.pt.partial && mv .gpu/start.pt.partial .gpu/start.pt
# The device's python is 3.12 on x86-64 with torch, numpy, opencv, tqdm, tensorboard already there.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl lmdb editdistance
du -sh .gpu .gpu/* | sed 's/^/  /'
echo "carry [\".gpu\"]; the tree that travels must stay under 64 MiB: untrack *.pt first (README.md here)"
