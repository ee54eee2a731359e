"""Classifies pictures with an exported model.onnx, using onnxruntime, NumPy and Pillow only.

  python main.py --mode export --workdir runs/x --format onnx
  python examples/onnx_classify.py runs/x/export/model.onnx cat.jpg boat.png

The model takes uint8 [batch, 32, 32, 3] RGB images and does the rest itself (normalisation,
resizing to the network's size, test-time augmentation); its metadata names the classes. A
picture is made CIFAR-sized as `--mode predict` makes it: its first frame, upright, over white
where transparent, its central square resized to 32x32 with antialiasing.
"""

import argparse
import json

import numpy as np
import onnxruntime
from PIL import Image, ImageOps


def cifar_sized(path: str) -> np.ndarray:
  with Image.open(path) as image:
    image.seek(0)
    image.draft(image.mode, (256, 256))  # a large JPEG decoded reduced
    rgba = ImageOps.exif_transpose(image).convert('RGBA')
  rgb = Image.alpha_composite(Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')
  side = min(rgb.size)
  left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
  square = rgb.crop((left, top, left + side, top + side))
  return np.asarray(square.resize((32, 32), Image.Resampling.BICUBIC), np.uint8)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('model', help='model.onnx written by main.py --mode export')
  parser.add_argument('images', nargs='+', help='image files')
  parser.add_argument('--top_k', type=int, default=5)
  args = parser.parse_args()

  session = onnxruntime.InferenceSession(args.model, providers=['CPUExecutionProvider'])
  names = json.loads(session.get_modelmeta().custom_metadata_map['class_names'])
  images = np.stack([cifar_sized(path) for path in args.images])
  probabilities, = session.run(['probabilities'], {'images': images})
  for path, p in zip(args.images, probabilities):
    top = np.argsort(-p, kind='stable')[:args.top_k]
    print(f'{path}: ' + ', '.join(f'{names[i]} {p[i]:.4f}' for i in top))


if __name__ == '__main__':
  main()
