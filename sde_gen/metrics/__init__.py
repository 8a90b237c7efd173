"""Sample-quality metrics on features: Fréchet distance (FID), KID, Inception Score, and
improved precision and recall."""

from .frechet import FeatureStats, feature_stats, frechet_distance
from .inception_score import inception_score
from .kid import kernel_distance, polynomial_mmd2
from .precision_recall import precision_recall

__all__ = [
    "FeatureStats",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "polynomial_mmd2",
    "precision_recall",
]
