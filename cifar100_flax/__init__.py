"""cifar100_flax: train and evaluate image classifiers on CIFAR-100 with JAX/Flax.

The Python API (cifar100_flax/api.py) is here too: `cifar100_flax.train(config, workdir)`,
`evaluate(workdir)`, `load(workdir)`, `report(workdirs)`, `get_config(name)`, `history(workdir)`,
`tune_for_cpu()`. It loads on first use, so that importing one module of the package (the
command line's) loads none of the rest.
"""

API = ('tune_for_cpu', 'get_config', 'train', 'evaluate', 'load', 'history', 'report')
__all__ = list(API)


def __getattr__(name: str):
  if name in API:
    from cifar100_flax import api
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
