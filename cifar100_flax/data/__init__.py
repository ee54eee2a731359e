"""CIFAR-100 and what is done to its images: the dataset's constants and class names
(`cifar100`), the tfds pipeline (`tfds_pipeline`, the only module that imports TensorFlow) or
synthetic data (`synthetic`), on-device augmentation (`augment`, `autoaugment`), MixUp/CutMix
(`mixing`) and the preprocessing a model's input goes through (`preprocessing`).

Imports: JAX, numpy, dm-pix, tfds (tfds_pipeline only) and the base modules; nothing of models or
training.
"""
