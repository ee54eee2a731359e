"""Every flag of the command line (absl), defined once; `config_flags` reads --config and its
--config.KEY=VALUE overrides."""

import os

from absl import flags
from ml_collections import config_flags

MODES = ('train', 'eval', 'report', 'predict', 'export', 'convert', 'photos')

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a configs/*.py file; any key of it can be overridden with '
    '--config.KEY=VALUE (e.g. --config.optim.learning_rate=0.05; every key is in '
    'cifar100_flax/config/defaults.py).', lock_config=True)
PRINT_CONFIG = flags.DEFINE_bool('print_config', False, 'Print the resolved config (--config '
                                 'with its overrides, else the --workdir\'s config.json) and exit.')
WORKDIR = flags.DEFINE_multi_string('workdir', None, 'Where checkpoints, logs and results go; '
                                    'report: once per run to compare.')
MODE = flags.DEFINE_enum('mode', 'train', MODES, 'What to do.')
SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'eval: the split to evaluate '
                          '(validation: the carve-out of the training images, to choose '
                          'evaluation settings on; one workdir only).')
OUTPUT = flags.DEFINE_string('output', None, 'report: the folder to write to (default: the '
                             'first workdir\'s report/); eval of several workdirs: where the '
                             'ensemble\'s results go; predict: a .csv or .json file (default: '
                             'WORKDIR/predictions.csv); export: a folder (default: '
                             'WORKDIR/export); convert: the .msgpack file to write.')
IMAGES = flags.DEFINE_multi_string(
    'images', None, 'predict: image files, folders (searched recursively) or globs; the paths '
    'after the flags are more of them (--images photos/*.jpg). Exit status 2: some could not '
    'be read (each said why), the rest were predicted.')
TOP_K = flags.DEFINE_integer('top_k', 5, 'predict: how many classes to list per image.')
FORMAT = flags.DEFINE_enum('format', 'onnx', ['onnx', 'stablehlo', 'savedmodel'],
                           'export: the file format (README, Use a trained model).')
GRADCAM_LAYER = flags.DEFINE_string('gradcam_layer', None, 'report: the submodule (path, e.g. '
                                    'layer4_2) Grad-CAM explains; default: the last feature map.')
PAPER = flags.DEFINE_enum('paper', 'A4', ['A4', 'letter'], 'report: the PDF\'s page size.')
WEIGHTS = flags.DEFINE_string('weights', None, 'convert: the PyTorch or timm weights to convert '
                              '(.safetensors, .pth, .pt, .bin or a Hugging Face hub id).')
MODEL = flags.DEFINE_string('model', None, 'convert: the model the weights are for (resnet18 to '
                            'resnet152, vit_*, efficientnet_lite*); photos: the EfficientNet-Lite '
                            'whose ImageNet top-5 to show (default: efficientnet_lite0).')
COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'Several processes: HOST:PORT where process 0 listens (default: '
    '$JAX_COORDINATOR_ADDRESS, or found on SLURM, Open MPI and Cloud TPU).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Several processes: how many '
                                     '(default: $JAX_NUM_PROCESSES).')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Several processes: this one\'s index in '
                                  '[0, num_processes) (default: $JAX_PROCESS_ID).')
COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    'coordinator_timeout', 120, 'Several processes: seconds to wait for all of them to start '
    'before giving up with an error.', lower_bound=1)
CPU_TUNING = flags.DEFINE_enum(
    'cpu_tuning', 'auto', ['auto', 'on', 'off'], 'Tune the process for XLA:CPU (XLA flags, '
    'malloc, AMX; cifar100_flax/cpu/tuning.py). auto: for train and eval when JAX will run on the '
    'CPU (no accelerator plugin installed, or $JAX_PLATFORMS=cpu).')
TRACEBACK = flags.DEFINE_bool('traceback', os.environ.get('CIFAR100_FLAX_TRACEBACK') == '1',
                              'Show the full traceback of an error in the input, not one line.')
