#!/usr/bin/env bash
# The study from the command line: the custom CNN from scratch against EfficientNet-Lite0 from its
# ImageNet weights (reading them needs torch), evaluated on the test set and compared in a report.
# About 2.5 hours on a 2-core CPU (cnn_fast about 30 minutes, efficientnet_lite0 about 2 hours);
# run it again after an interruption and each run resumes. examples/study.ipynb is the same in
# Python.
#
#   bash examples/study.sh [WORKDIR]        # default runs/study; the report: WORKDIR/report/
set -euo pipefail
cd "$(dirname "$0")/.."
workdir=${1:-runs/study}
for model in cnn_fast efficientnet_lite0; do
  python main.py --config "configs/$model.py" --workdir "$workdir/$model"
  python main.py --mode eval --workdir "$workdir/$model"
done
python main.py --mode report --workdir "$workdir/cnn_fast" --workdir "$workdir/efficientnet_lite0" \
    --output "$workdir/report"
