"""The command line: flags, their errors said in one line, process start-up and the modes.

Its modules are the only ones that read flags or import the training loop; every other package
is a library that the CLI (or a notebook) calls with a config and paths. The entry points are
`main.py`, `python -m cifar100_flax` and the `cifar100-flax` script, all `entry.run`.

Imports: every package; nothing imports it but the entry points.
"""
