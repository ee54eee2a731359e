"""Time to accuracy: trains a recipe on all 50,000 training images, tests it, prints one line.

  python bench/time_to_accuracy.py --seed=0 --workdir=runs/tta_s0 [--config=configs/cnn_fast.py]
      [--config.KEY=VALUE ...]

Runs what a user runs, in new processes: `python main.py` to train (with validation_size=0 and
early stopping off, so that every training image is trained on), then `--mode eval` on the
10,000 test images. Training time is the training loop's own clock, compilation and checkpoints
included, evaluation and process start excluded; an interrupted run resumes and its sessions add
up. FLOPs are XLA's count of the training steps. The last line printed is

  TIME_TO_ACCURACY config=cnn_fast seed=0 cpu="<CPU model>, <cores> cores" train_minutes=<m>
      train_flops=<f> test_top1=<a>

Compare times only between runs on one machine kind (the CPU is named for that: the one the
training recorded).
"""

import argparse
import json
import pathlib
import subprocess
import sys

_REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/cnn_fast.py')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', required=True)
  args, overrides = parser.parse_known_args()
  train = [sys.executable, 'main.py', f'--config={args.config}', f'--workdir={args.workdir}',
           f'--config.train.seed={args.seed}', f'--config.data.shuffle_seed={args.seed}',
           '--config.data.validation_size=0', '--config.early_stopping.patience=0', *overrides]
  subprocess.run(train, cwd=_REPO, check=True)
  subprocess.run([sys.executable, 'main.py', f'--workdir={args.workdir}', '--mode=eval'],
                 cwd=_REPO, check=True)
  report = json.loads((_REPO / args.workdir / 'eval_test.json').read_text())
  print(f'TIME_TO_ACCURACY config={pathlib.Path(args.config).stem} seed={args.seed} '
        f'cpu="{report["hardware"]}" train_minutes={report["train_seconds"] / 60:.1f} '
        f'train_flops={report["train_flops"] or float("nan"):.3g} '  # nan: not counted
        f'test_top1={report["top1_accuracy"]:.4f}')


if __name__ == '__main__':
  main()
