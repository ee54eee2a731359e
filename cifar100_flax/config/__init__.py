"""The config: every key with its meaning and default (`defaults`, which configs/*.py start
from), its checks (`checks.validate`, run before anything is compiled) and the configs of runs
(`loading`: a config file by path, a workdir's config.json, the resume check).

Imports: ml_collections; `checks` asks models, data, optim and cpu what they accept.
"""
