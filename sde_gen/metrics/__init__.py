"""Sample-quality metrics on features: Fréchet distance (FID), KID, Inception Score, and
improved precision and recall; reference statistics read from shared files."""

from .frechet import FeatureStats, feature_stats, frechet_distance
from .inception_score import inception_score
from .kid import kernel_distance, polynomial_mmd2
from .precision_recall import precision_recall
from .reference_stats import ReferenceStats, load_reference_stats, sha256_of_file

__all__ = [
    "FeatureStats",
    "ReferenceStats",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "load_reference_stats",
    "polynomial_mmd2",
    "precision_recall",
    "sha256_of_file",
]
