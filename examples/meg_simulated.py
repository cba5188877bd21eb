"""MEG+EEG decoding across subjects with the experiment of ``meg_simulated.yaml``.

One continuous recording per subject is simulated on the sensor layout of a
real Neuromag recording (by default the MNE sample recording in
``../shared/data/meg``; any FIF file with MEG and digitised EEG works): dipoles
in a spherical head model, 1/f background, a class-dependent auditory response
at each annotated tone, sensor noise, and MEG reduced to its rank after SSS
(see :func:`neurofm.simulate.simulate_meg_eeg_recordings`). The recordings go
into ``Experiment.run`` as they are; the config's ``windows`` section cuts them.

Usage::

    python examples/meg_simulated.py [--info path/to/raw.fif] [--random-weights] [--tiny] [--dry-run]

``--random-weights`` runs the backbones with random weights (no download: the
rows then show the workflow, not what pretrained weights reach); ``--tiny``
also shrinks them to a few layers for a quick check. ``--dry-run`` simulates
the recordings, cuts the config's windows and lists the models and folds, then
stops before any model is fitted (seconds, where the run takes minutes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_INFO = HERE.parents[1] / "shared" / "data" / "meg" / "sample_audvis_trunc_raw_sss.fif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info", default=str(DEFAULT_INFO), help="a FIF recording whose sensor layout is used")
    parser.add_argument("--config", default=str(HERE / "meg_simulated.yaml"))
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny backbones with random weights (a quick check)")
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--windows-per-class", type=int, default=16)
    parser.add_argument("--cache-dir", default="~/.cache/neurofm")
    parser.add_argument("--dry-run", action="store_true", help="cut the windows and list the models, fit nothing")
    args = parser.parse_args()

    import mne

    from neurofm import Experiment
    from neurofm.configs import (
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        NeuralFineTuneConfig,
    )
    from neurofm.models import get_model_spec
    from neurofm.simulate import simulate_meg_eeg_recordings

    info = mne.io.read_info(args.info, verbose="error")
    start = time.perf_counter()
    recordings = simulate_meg_eeg_recordings(info, n_subjects=args.subjects, n_windows_per_class=args.windows_per_class)
    types = recordings[0].get_channel_types()
    counts = {kind: types.count(kind) for kind in dict.fromkeys(types)}
    print(
        f"simulated {len(recordings)} recordings of {recordings[0].times[-1]:.0f} s, {counts}, "
        f"in {time.perf_counter() - start:.1f} s"
    )

    config = ExperimentConfig.from_yaml(args.config).model_copy(update={"cache_dir": args.cache_dir})
    if args.random_weights or args.tiny:
        for name, model in config.models.items():
            frozen = isinstance(model, FrozenBackboneDecoderConfig)
            backbone = model.backbone if frozen else model
            if not isinstance(backbone, (FoundationEmbeddingModelConfig, NeuralFineTuneConfig)):
                continue  # a classical baseline
            update = {"weights": "random"}
            if args.tiny:
                update["model_kwargs"] = get_model_spec(backbone.model_key).tiny_kwargs
            backbone = backbone.model_copy(update=update)
            config.models[name] = model.model_copy(update={"backbone": backbone}) if frozen else backbone

    # Labels come from the annotations; the metadata gives each recording's subject.
    subjects = {"Subject": list(range(1, len(recordings) + 1))}
    if args.dry_run:
        dry_run(config, recordings, subjects)
        return

    start = time.perf_counter()
    result = Experiment(config).run(recordings, None, sample_metadata=subjects)
    seconds = time.perf_counter() - start
    summary = result.summary()
    print(
        f"\nwindows per recording: {result.meta['recordings']['windows_per_recording']}; "
        f"sensors kept: {result.meta['signal']['sensor_types']}; {seconds:.0f} s"
    )
    print(summary.pivot_table(index="Model", columns="Metric", values="mean").round(3).to_string())


def dry_run(config, recordings, subjects) -> None:
    """Print the windows the config cuts (as ``Experiment.run`` cuts them) and the models it would fit."""
    from neurofm.loaders import windows_from_recordings

    epochs = windows_from_recordings(recordings, config.windows, recording_metadata=subjects)
    classes = epochs.metadata["label"].value_counts().sort_index().to_dict()
    print(
        f"windows: {len(epochs)} of {epochs.times[-1] - epochs.times[0]:.1f} s "
        f"({config.windows.tmin} to {config.windows.tmax} s around each tone), classes {classes}"
    )
    print(f"cv: {config.cv.strategy}, {config.cv.n_splits} folds by {config.cv.group_key}; models:")
    for name, model in config.models.items():
        backbone = getattr(model, "backbone", model)
        if hasattr(backbone, "model_key"):
            weights = backbone.weights or "published"
            size = ", tiny" if backbone.model_kwargs else ""
            mode = f", {model.train_mode}" if hasattr(model, "train_mode") else ""
            print(f"  {name}: {model.kind}, {backbone.model_key} ({weights} weights{size}{mode})")
        else:
            print(f"  {name}: {model.kind} ({backbone.estimator})")
    print("dry run: nothing was fitted")


if __name__ == "__main__":
    main()
