"""Optimisers and learning-rate schedules (optax) as a config names them: `schedules` and
`optimizers` (SGD, Adam(W), Muon, freezing, multipliers, reduce-on-plateau, lookahead).

Imports: optax, JAX and the base modules only.
"""
