"""Train, evaluate and report on a CIFAR-100 classifier.

  python main.py --config configs/cnn.py --workdir runs/cnn               # train (or resume)
  python main.py --workdir runs/cnn --mode eval                           # test-set metrics
  python main.py --workdir runs/cnn --mode eval --split validation        # on the carve-out
  python main.py --mode eval --workdir runs/a --workdir runs/b --output runs/ab   # an ensemble
  python main.py --mode report --workdir runs/cnn [--workdir runs/b ...]  # report.html, report.pdf
  python main.py --mode predict --workdir runs/cnn --images photos/ cat.jpg  # your own pictures
  python main.py --mode export --workdir runs/cnn --format onnx           # export/model.onnx
  python main.py --mode convert --weights resnet50.pth --model resnet50 --output r50.msgpack
  python main.py --mode photos --model efficientnet_lite0                 # ImageNet weights check

Several processes (hosts) form one run with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I on each (process 0 listens at HOST:PORT), or by themselves under SLURM, Open MPI
and on Cloud TPU; see README, Many devices and hosts.

Errors in what the user gave (flags, config values, data, checkpoints) are one line without a
traceback; --traceback (or CIFAR100_FLAX_TRACEBACK=1) shows it. TensorFlow's, XLA's and absl's
start-up messages are off unless --verbosity=0 (absl's flag: 0 is INFO, 1 DEBUG) asks for them.
`python -m cifar100_flax` and the `cifar100-flax` script are the same command
(cifar100_flax/cli/).
"""

from cifar100_flax.cli import entry

if __name__ == '__main__':
  entry.run()
