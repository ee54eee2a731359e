"""The CPU speed path: what makes a training step on a 2-core CPU at least as fast as PyTorch's.

Nothing here changes what a model computes (every piece is tested against the plain JAX/Flax
expression); it changes how fast XLA:CPU computes it. Three parts:

- `tuning.configure()`: process-wide XLA:CPU flags, glibc malloc settings and the AMX permission,
  applied by the entry points (cli/startup.py, bench/) before JAX starts its backend, where JAX
  will run on the CPU (`tuning.configure_if`, the `--cpu_tuning` flag).
- `convolution` and `fused_layers`: the models' building blocks on the CPU (convolutions routed to
  the forms XLA:CPU runs fast; BatchNorm fused with its activation and a residual, max-pooling,
  bias + activation, with closed-form gradients (`jax.custom_vjp`) so that their reverse mode
  makes few passes over the activations). They are plain JAX, measured on XLA:CPU only: models
  are built from them on the CPU (`models/layer_set.cpu(backend)`; `config.cpu.speed_path`), from
  Flax's own layers elsewhere.
- `onednn`: oneDNN's convolutions and matmul (PyTorch's CPU library) as XLA FFI custom calls
  (C++ in `csrc/onednn_conv.cc`), built with the system's C++ compiler when an entry point asks
  for them (`onednn.resolve`), cached in ~/.cache/cifar100_flax.

How it falls back: `config.cpu.conv_backend='auto'` takes oneDNN only on a single CPU device where
the extension builds; without a compiler or oneDNN, on several devices and on accelerators it takes
XLA's own convolutions (with a warning saying why), so that every run works everywhere and only
the speed differs. `'onednn'` asks for it and fails with a one-line error where it cannot be had.
The measurements behind each choice are in docs/speed.md.

Imports: JAX, Flax and the base modules (errors, console, hardware) only.
"""
