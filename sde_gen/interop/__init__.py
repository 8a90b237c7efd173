"""Readers of checkpoints and weights released with other code into sde_gen's networks.

- `adm`: guided-diffusion's (ADM's) diffusion models and noise-conditional classifiers.
"""
