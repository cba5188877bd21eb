"""scikit-learn compatible estimators: frozen foundation embedders and classical baselines."""

from .classical import BandPower, build_estimator, build_window_estimator, list_estimators

__all__ = ["BandPower", "build_estimator", "build_window_estimator", "list_estimators"]
