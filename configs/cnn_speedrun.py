"""75% in a quarter hour on 2 CPU cores: the CIFAR-100 speedrun's residual network, 7 epochs.

  python main.py --config configs/cnn_speedrun.py --workdir runs/cnn_speedrun
  python main.py --config configs/cnn_speedrun.py --workdir runs/cnn_speedrun --mode eval
  python bench/time_to_accuracy.py --config=configs/cnn_speedrun.py --seed=0 --workdir=runs/s0

The network of the CIFAR-100 speedrun's record (Navier-Stoked, 2025, after team
futurebiohackers): airbench's frozen whitening, then stages of 64, 256 and 768 channels, each one
convolution (3x3, 3x3, 2x2), a 2x2 max-pool and a residual pair through 64, 192 and 512 channels
(1x1 and 1x1, 3x3 and 1x1, 3x3 and 3x3); identity-initialised convolutions, SiLU, max and mean
pooled features. cnn_fast's Muon (its Newton-Schulz in bfloat16, on oneDNN on a CPU) and SGD;
20 -> 24 -> 32 px, 2-pixel translations and alternating flips, label smoothing 0.25, flip and
translation TTA. Chosen on the validation split (docs/results.md, "cnn_speedrun").
On all 50,000 images (bench/time_to_accuracy.py), alone on a 2-core Intel Xeon (Sapphire
Rapids, AMX): test top-1 0.7529, 0.7528 and 0.7530 for seeds 0, 1 and 2 (mean 0.7529), in 7.6,
7.5 and 7.5 minutes of training with 2.17e14 FLOPs each. On an AVX2 AMD EPYC (Zen 3): seed 0
0.7546 in 45.3 minutes; taught by a 2-hour Lite1 run as well as the labels (distilled, not from
scratch: --config.distill_from=runs/lite1_2h --config.distill.temperature=1
--config.distill.weight=0.5), 0.7582 in 46.6. Not yet run on the AVX-512 AMD EPYC (Zen 4).
"""

import pathlib

import ml_collections

from cifar100_flax.config import loading


def get_config() -> ml_collections.ConfigDict:
  # cnn_fast's recipe, loaded by its path as --config loads this file (configs/ is no package).
  config = loading.config_from_file(str(pathlib.Path(__file__).with_name('cnn_fast.py')))
  config.model.kwargs = dict(widths=(64, 256, 768), convs_per_stage=3,
                             residual_mids=(64, 192, 512),
                             kernel_sizes=(3, 1, 1, 3, 3, 1, 2, 3, 3), activation='silu',
                             head='max_mean', logit_scale=1.25 / 9)
  config.optim.muon.newton_schulz_dtype = 'bfloat16'
  # The record's shares of the steps at 20 and 24 px (15% and 35%), the rest at 32.
  config.train.num_epochs = 7
  config.data.image_size_schedule = ((0, 20), (1.05, 24), (3.5, 32))
  config.schedule.warmup_epochs = 1.75  # a quarter, as the record
  config.train.label_smoothing = 0.25
  config.augment.crop_padding = 2
  return config
