"""Sample-quality metrics on features: Fréchet distance (FID), KID and Inception Score."""

from .frechet import FeatureStats, feature_stats, frechet_distance
from .inception_score import inception_score
from .kid import kernel_distance, polynomial_mmd2

__all__ = [
    "FeatureStats",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "polynomial_mmd2",
]
