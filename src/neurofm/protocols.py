"""What an estimator implements for an experiment to collect its training artifacts.

An experiment checks every fitted estimator against :class:`NeuralTrainable`
(``isinstance``), whatever config brought it: neurofm's own
:class:`~neurofm.estimators.neural.NeuralFineTuner`, a classical estimator of
your own (``ClassicalModelConfig(estimator="mylab.decoders.MyDecoder")``) or a
head on frozen embeddings. One that implements the protocol gets what its
:meth:`~NeuralTrainable.get_artifact_metadata` returns recorded as artifacts of
each fold (:meth:`neurofm.ExperimentResult.get_model_artifacts`).

This module imports nothing heavy: ``import neurofm`` loads it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["NeuralTrainable", "TRAINABLE_METHODS"]

#: The protocol's methods, in the order of the guide.
TRAINABLE_METHODS = (
    "get_training_history",
    "get_checkpoint_manifest",
    "get_model_card_info",
    "get_failure_diagnostics",
    "get_artifact_metadata",
)


@runtime_checkable
class NeuralTrainable(Protocol):
    """A fitted estimator that reports how its training went.

    Implement the five methods (plain methods of the class; no need to
    derive from this class) and an experiment records, for every fold, what
    :meth:`get_artifact_metadata` returns: each artifact type becomes rows
    of ``result.get_model_artifacts(artifact_type=...)`` (one row per epoch
    of ``"training_history"``, keyed ``epoch_000``, ``epoch_001``, ...; one
    row per key of the other types). An estimator that lacks any of the five
    is not ``NeuralTrainable`` and none of its artifacts are collected.

    The methods are called on the fitted estimator, once per fold, after it
    has been scored. Values must be what JSON can hold (numbers, strings,
    booleans, ``None``, lists and dicts of them; numpy scalars and arrays are
    turned into numbers and lists), as results are saved as Parquet and JSON;
    a method that raises or returns anything else stops the run with a
    :class:`~neurofm.exceptions.ModelFitError` naming the estimator and the
    method.

    Examples
    --------
    >>> import neurofm
    >>> from sklearn.linear_model import LogisticRegression
    >>> isinstance(LogisticRegression(), neurofm.NeuralTrainable)
    False
    """

    def get_training_history(self) -> list[dict[str, Any]]:
        """The training, epoch by epoch.

        Returns
        -------
        history : list of dict
            One record per epoch, in order: losses and metrics (e.g.
            ``train_loss``, ``val_loss``), learning rate, seconds. A record's
            ``"epoch"`` (an int), where present, numbers its row; otherwise its
            position in the list does.
        """
        ...

    def get_checkpoint_manifest(self) -> dict[str, Any]:
        """What was saved of the trained model.

        Returns
        -------
        manifest : dict
            Saved checkpoint paths (e.g. ``directory``, one file per tag), the
            best epoch and its monitored value.
        """
        ...

    def get_model_card_info(self) -> dict[str, Any]:
        """What the model is and how it was trained.

        Returns
        -------
        card : dict
            Architecture, parameter counts, where the weights came from, input
            adaptation and the training settings.
        """
        ...

    def get_failure_diagnostics(self) -> dict[str, Any]:
        """What went wrong in training, if anything.

        Returns
        -------
        diagnostics : dict
            Non-finite losses or gradients (with the epoch and step), gradient
            norms, why training stopped.
        """
        ...

    def get_artifact_metadata(self) -> dict[str, Any]:
        """Everything above, keyed by artifact type: what an experiment records.

        Returns
        -------
        artifacts : dict
            ``{"training_history": list of dict, "checkpoints": dict,
            "model_card": dict, "failure_diagnostics": dict}``, as the four
            methods above return them, plus any further artifact types (each
            a dict). ``"permutation_test"`` and ``"timing"`` are the
            experiment's own and may not be used.
        """
        ...
