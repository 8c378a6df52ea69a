#!/bin/bash
# Stage 13 on the lent GPU: three arms resumed from stage 12b (.gpu/start.pt = checkpoints/gan_v12/last.pt)
# side by side, each stopped by --time-limit. Brings back wid2/wid5 last.pt (15 MB parts) and, in a
# tar, every arm's EMA and live exports, metrics, logs, samples, writer probes.
set -u
TRAIN_S=${TRAIN_S:-400}; DEV=${DEV:-cuda}; OUT=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1
if ! python3 -c "import lmdb, editdistance" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi -L 2>/dev/null; nproc; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
R=/tmp/runs13; rm -rf $R /tmp/train32.lmdb /tmp/val32.lmdb; mkdir -p $R $OUT/pack
python3 .gpu/unpack.py .gpu/train32 /tmp/train32.lmdb && python3 .gpu/unpack.py .gpu/val32 /tmp/val32.lmdb || exit 1
declare -A CFG=([wid05]=gpu_stage12b [wid2]=gpu_stage13_wid2 [wid5]=gpu_stage13_wid5)
ARMS="wid05 wid2 wid5"
pids=""
for a in $ARMS; do
  mkdir -p $R/$a && cp .gpu/start.pt $R/$a/last.pt
  python3 -m htr_augment.gan.train --config configs/gan/${CFG[$a]}.toml --train /tmp/train32.lmdb --val /tmp/val32.lmdb \
    --out $R/$a --resume --device $DEV --no-progress --time-limit $TRAIN_S > $OUT/pack/train_$a.log 2>&1 &
  pids="$pids $!"
done
( sleep $((TRAIN_S + 90)); kill -TERM $pids 2>/dev/null ) &   # safety net only
wait $pids; echo "stopped after $SECONDS s"
for a in $ARMS; do
  echo "== $a"; grep -v "^\s*$" $OUT/pack/train_$a.log | tail -3
  cp $R/$a/metrics.csv $OUT/pack/metrics_$a.csv
  s=$(ls $R/$a/samples/*.png 2>/dev/null | tail -1); [ -n "$s" ] && cp $s $OUT/pack/samples_$a.png
  python3 -m htr_augment.gan.export $R/$a/last.pt --style-temperature 1.5 --line-style-temperature 1 --ink-quantile 0.99 --out $OUT/pack/gen_${a}_ema.pt | tail -1
  python3 -m htr_augment.gan.export $R/$a/last.pt --live --style-temperature 1.5 --line-style-temperature 1 --ink-quantile 0.99 --out $OUT/pack/gen_${a}_live.pt | tail -1
  python3 -m htr_augment.gan.writer_probe $R/$a/last.pt --train /tmp/train32.lmdb --device $DEV --json $OUT/pack/probe_$a.json 2>&1 | tail -8 &
done
wait
split -b 15000000 $R/wid2/last.pt $OUT/wid2.last.pt.part-
split -b 15000000 $R/wid5/last.pt $OUT/wid5.last.pt.part-
(cd $OUT && tar cf - pack | split -b 15000000 - pack.tar.part- && rm -rf pack)
ls -la $OUT
