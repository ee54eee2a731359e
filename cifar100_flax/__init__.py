"""cifar100_flax: train and evaluate image classifiers on CIFAR-100 with JAX/Flax."""
