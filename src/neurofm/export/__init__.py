"""Models out of an experiment: refit models kept and saved, exported in the hub layout, pushed to a hub.

Three layouts, each read without running code (JSON and safetensors only,
never pickle):

``braindecode`` (a fine-tuned braindecode backbone)
    ``config.json`` + ``model.safetensors`` as braindecode's
    ``save_pretrained`` writes them: plain braindecode's
    ``<Class>.from_pretrained(path)`` builds the fine-tuned model with its
    adapters merged into the weights and neurofm's trained head written as
    the class's own ``final_layer``, and its forward gives neurofm's logits
    exactly (checked on every export). Only heads that the class's
    ``final_layer`` can hold exactly are written (:data:`BRAINDECODE_HEADS`);
    the others are refused with the reason.
``braindecode`` (a from-scratch network)
    The braindecode class as trained (``ScratchModelConfig``), its own
    ``save_pretrained`` files; ``<Class>.from_pretrained(path)`` gives
    neurofm's logits bit for bit (checked on every export).
``checkpoint`` (any fine-tuned decoder or from-scratch network)
    neurofm's own checkpoint folder (``config.json`` + ``best.safetensors``),
    reloaded with :meth:`NeuralFineTuner.from_checkpoint
    <neurofm.estimators.neural.NeuralFineTuner.from_checkpoint>` (a
    from-scratch network's with ``ScratchTrainer.from_checkpoint``).
``frozen-probe`` (a frozen backbone + a linear scikit-learn head, standardised or not)
    The backbone's reference (registry key, weights and their identity,
    pooling, input adaptation) and the fitted head's arrays
    (``head.safetensors``) and parameters; :func:`load_exported` rebuilds
    both and checks that the weights it finds are those the head was fitted
    on.

Every export also holds ``neurofm_export.json`` (what the folder is, the
input adaptation the model expects, where its weights come from) and a model
card, ``README.md`` (data, cross-validated scores, config, versions).

The refit models of ``ExperimentConfig(refit=True)`` are saved in the result
folder (``models/model-<hash>/``) in these layouts: a fine-tuned decoder (adapters merged) or a
from-scratch network as a checkpoint folder, a frozen probe as a ``frozen-probe``
folder, each with a record of its files so a resumed run reads it back.

The package's modules, one layout or step each: :mod:`.files` (what every
folder holds), :mod:`.heads` (fitted heads without pickle), :mod:`.probes`,
:mod:`.braindecode_layout`, :mod:`.refit` (refit models saved and read
back), :mod:`.model_card`, :mod:`.folders` (``export_model``) and
:mod:`.loading` (``load_exported``, ``push_to_hub``).
"""

from .braindecode_layout import BRAINDECODE_HEADS, braindecode_refusal, decoder_for_export
from .files import EXPORT_JSON, REFIT_RECORD
from .folders import export_model
from .heads import LINEAR_HEADS
from .loading import load_exported, push_to_hub
from .model_card import model_card
from .probes import FrozenProbe
from .refit import (
    copy_refit,
    load_fine_tuned,
    load_probe,
    refit_checkpoint_folder,
    refit_kind,
    refit_on_record,
    save_fine_tuned,
    save_probe,
    write_refit_record,
)

__all__ = [
    "BRAINDECODE_HEADS",
    "EXPORT_JSON",
    "FrozenProbe",
    "LINEAR_HEADS",
    "REFIT_RECORD",
    "braindecode_refusal",
    "copy_refit",
    "decoder_for_export",
    "export_model",
    "load_exported",
    "load_fine_tuned",
    "load_probe",
    "model_card",
    "push_to_hub",
    "refit_checkpoint_folder",
    "refit_kind",
    "refit_on_record",
    "save_fine_tuned",
    "save_probe",
    "write_refit_record",
]
