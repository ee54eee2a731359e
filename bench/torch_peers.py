"""The project's networks written in PyTorch, layer for layer, as the peers of
bench/throughput.py."""

import torch
from torch import nn


class CNN(nn.Module):
  """cifar100_flax.models.cnn.CNN."""

  def __init__(self, num_classes: int, widths=(32, 64, 128), convs_per_stage: int = 2,
               hidden: int = 256, dropout: float = 0.3):
    super().__init__()
    layers, channels = [], 3
    for width in widths:
      for _ in range(convs_per_stage):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        channels = width
      layers.append(nn.MaxPool2d(2))
    self.features = nn.Sequential(*layers)
    head = [nn.Dropout(dropout)]
    if hidden:
      head += [nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
      channels = hidden
    self.head = nn.Sequential(*head, nn.Linear(channels, num_classes))

  def forward(self, x):
    return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, channels: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = _downsample(channels, width, stride)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, channels: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = _downsample(channels, width * 4, stride)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def _downsample(channels: int, width: int, stride: int):
  if stride == 1 and channels == width:
    return None
  return nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))


class ResNet(nn.Module):
  """cifar100_flax.models.resnet.ResNet, with torchvision's module names (its state-dict keys)."""

  def __init__(self, num_classes: int, block: str = 'basic', stage_sizes=(2, 2, 2, 2),
               stem: str = 'imagenet', width: int = 64, dropout: float = 0.0):
    super().__init__()
    block = {'basic': BasicBlock, 'bottleneck': Bottleneck}[block]
    imagenet = stem == 'imagenet'
    self.conv1 = nn.Conv2d(3, width, 7 if imagenet else 3, 2 if imagenet else 1,
                           3 if imagenet else 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
    channels = width
    for stage, size in enumerate(stage_sizes):
      blocks = []
      for index in range(size):
        blocks.append(block(channels, width * 2**stage, 2 if stage and not index else 1))
        channels = width * 2**stage * block.expansion
      setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.dropout = nn.Dropout(dropout)
    self.fc = nn.Linear(channels, num_classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for stage in range(self.num_stages):
      x = getattr(self, f'layer{stage + 1}')(x)
    return self.fc(self.dropout(x.mean(dim=(2, 3))))


class Airbench(nn.Module):
  """cifar100_flax.models.airbench.Airbench: frozen whitening, BatchNorm with a bias and no
  scale."""

  def __init__(self, num_classes: int, widths=(64, 256, 256), convs_per_stage: int = 2,
               logit_scale: float = 1 / 9, batch_norm_momentum: float = 0.6):
    super().__init__()
    whitening = nn.Conv2d(3, 24, 2)
    whitening.weight.requires_grad_(False)
    layers, channels = [whitening, nn.GELU(approximate='tanh')], 24
    for width in widths:
      for index in range(convs_per_stage):
        layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=False))
        if index == 0:
          layers.append(nn.MaxPool2d(2))
        norm = nn.BatchNorm2d(width, momentum=1 - batch_norm_momentum, eps=1e-12)
        norm.weight = None  # F.batch_norm then applies the bias alone
        layers += [norm, nn.GELU(approximate='tanh')]
        channels = width
    self.features = nn.Sequential(*layers)
    self.head = nn.Linear(channels, num_classes, bias=False)
    self.logit_scale = logit_scale

  def forward(self, x):
    return self.head(self.features(x).amax(dim=(2, 3))) * self.logit_scale


def efficientnet_lite(variant: int, num_classes: int, dropout: float = 0.2, drop_path: float = 0.2,
                      batch_norm_frozen: bool = False) -> nn.Module:
  """cifar100_flax.models.efficientnet.EfficientNetLite(variant): the reference implementation
  its weights convert from."""
  del batch_norm_frozen  # Both train their BatchNorm in the benchmark.
  from efficientnet_lite_pytorch import EfficientNet
  return EfficientNet.from_name(f'efficientnet-lite{variant}', num_classes=num_classes,
                                dropout_rate=dropout, drop_connect_rate=drop_path)
