#!/bin/bash
# On the lent GPU machine (the `run` command; see README.md here): resume .gpu/start.pt in each arm
# NAME=CONFIG side by side on the one GPU, stop them with --time-limit, then export each arm's live
# and EMA generators (the shipped export settings), probe writer identity, and put in $OUT each
# arm's last.pt in 15 MB parts (KEEP="name ...": only these arms'; $OUT returns at most 8 files,
# 64 MiB in all, so two arms' 22 MB checkpoints at most) plus one tar, in parts, of logs, metrics,
# samples, exports and probes.
#   TRAIN_S=420 KEEP=wid7 tools/gpu/train_arms.sh wid5=gpu_stage13_wid5 wid7=gpu_stage15_wid7
set -u
TRAIN_S=${TRAIN_S:-400}; DEV=${DEV:-cuda}; OUT=${OUT:-/tmp/out}; HEIGHT=${HEIGHT:-32}
[ $# -ge 1 ] || { echo "usage: TRAIN_S=S tools/gpu/train_arms.sh NAME=CONFIG [NAME=CONFIG ...]" >&2; exit 2; }
export PYTHONUNBUFFERED=1
if ! python3 -c "import lmdb, editdistance" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
R=/tmp/arms; rm -rf $R; mkdir -p $R $OUT/pack
for split in train val; do
  mkdir -p /tmp/$split$HEIGHT.lmdb && gunzip -c .gpu/$split$HEIGHT.mdb.gz > /tmp/$split$HEIGHT.lmdb/data.mdb || exit 1
done
pids=""; names=""
for arm in "$@"; do
  name=${arm%%=*}; cfg=${arm#*=}; names="$names $name"
  [ -f configs/gan/$cfg.toml ] || { echo "no configs/gan/$cfg.toml" >&2; exit 2; }
  mkdir -p $R/$name && cp .gpu/start.pt $R/$name/last.pt
  python3 -m htr_augment.gan.train --config configs/gan/$cfg.toml --train /tmp/train$HEIGHT.lmdb \
    --val /tmp/val$HEIGHT.lmdb --out $R/$name --resume --device $DEV --no-progress --time-limit $TRAIN_S \
    > $OUT/pack/train_$name.log 2>&1 &
  pids="$pids $!"
done
( sleep $((TRAIN_S + 90)); kill -TERM $pids 2>/dev/null ) &   # safety net only
wait $pids; echo "stopped after $SECONDS s"
for name in $names; do
  echo "== $name"; grep -v "^\s*$" $OUT/pack/train_$name.log | tail -3
  cp $R/$name/metrics.csv $OUT/pack/metrics_$name.csv
  s=$(ls $R/$name/samples/*.png 2>/dev/null | tail -1); [ -n "$s" ] && cp $s $OUT/pack/samples_$name.png
  for w in ema live; do
    flag=""; [ $w = live ] && flag=--live
    python3 -m htr_augment.gan.export $R/$name/last.pt $flag --style-temperature 1.5 --line-style-temperature 1 \
      --ink-quantile 0.99 --out $OUT/pack/gen_${name}_$w.pt | tail -1
  done
  python3 -m htr_augment.gan.writer_probe $R/$name/last.pt --train /tmp/train$HEIGHT.lmdb --device $DEV \
    --json $OUT/pack/probe_$name.json 2>&1 | tail -4 &
done
wait
for name in ${KEEP:-$names}; do split -b 15000000 $R/$name/last.pt $OUT/$name.last.pt.part-; done
(cd $OUT && tar cf - pack | split -b 15000000 - pack.tar.part- && rm -rf pack)
ls -la $OUT
