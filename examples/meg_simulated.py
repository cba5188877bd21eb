"""MEG+EEG decoding across subjects with the experiment of ``meg_simulated.yaml``.

One continuous recording per subject is simulated on the sensor layout of a
real Neuromag recording (by default the MNE sample recording in
``../shared/data/meg``; any FIF file with MEG and digitised EEG works): dipoles
in a spherical head model, 1/f background, a class-dependent auditory response
at each annotated tone, sensor noise, and MEG reduced to its rank after SSS
(see :func:`neurofm.simulate.simulate_meg_eeg_recordings`). The recordings go
into ``Experiment.run`` as they are; the config's ``windows`` section cuts them.

Usage::

    python examples/meg_simulated.py [--info path/to/raw.fif] [--random-weights] [--tiny]

``--random-weights`` runs the backbones with random weights (no download: the
rows then show the workflow, not what pretrained weights reach); ``--tiny``
also shrinks them to a few layers for a quick check.
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
    print(f"simulated {len(recordings)} recordings of {recordings[0].times[-1]:.0f} s, {counts}, "
          f"in {time.perf_counter() - start:.1f} s")

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

    start = time.perf_counter()
    # Labels come from the annotations; the metadata gives each recording's subject.
    subjects = {"Subject": list(range(1, len(recordings) + 1))}
    result = Experiment(config).run(recordings, None, sample_metadata=subjects)
    seconds = time.perf_counter() - start
    summary = result.summary()
    print(f"\nwindows per recording: {result.meta['recordings']['windows_per_recording']}; "
          f"sensors kept: {result.meta['signal']['sensor_types']}; {seconds:.0f} s")
    print(summary.pivot_table(index="Model", columns="Metric", values="mean").round(3).to_string())


if __name__ == "__main__":
    main()
