"""The exported surface matches what the documentation promises."""

from __future__ import annotations

import neurofm
import neurofm.configs


def test_top_level_exports():
    assert {"Experiment", "ExperimentResult", "list_foundation_models"} <= set(neurofm.__all__)
    for name in neurofm.__all__:
        assert hasattr(neurofm, name), name


def test_config_classes_of_the_guide_are_importable():
    for name in (
        "ExperimentConfig",
        "CVConfig",
        "ClassicalModelConfig",
        "FoundationEmbeddingModelConfig",
        "FrozenBackboneDecoderConfig",
    ):
        assert name in neurofm.configs.__all__
        assert hasattr(neurofm.configs, name)


def test_every_error_is_a_neurofm_error():
    from neurofm import exceptions

    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.NeuroFMError)
