"""Real recordings, cross-subject: classical baselines beside frozen foundation probes.

Two tasks from ../shared/data, each with stratified group 5-fold CV by subject:

- muse-n170: faces vs houses, 4 Muse channels, 1 s after each marker (5 subjects);
- uci-eeg-smni: stimulus condition (3 classes), 61 channels, 1 s trials (20 subjects).

Models: every classical baseline (csp_lda, ts_lr, xdawn_ts_lr, bandpower_lr) and
three frozen backbones with RANDOM weights (no pretrained weights can be
downloaded here; the rows show the workflow, not what pretrained weights reach)
probed by logistic regression. Balanced accuracy mean and spread over folds,
and permutation p-values. Then each classical baseline is rebuilt by hand with
scikit-learn / MNE / pyriemann and fitted on the same folds (in microvolts): the
per-fold scores must agree with neurofm's.

Usage: python benchmarks/real_data.py [--permutations 50] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

BACKBONES = ("cbramod", "labram", "luna")
BASELINES = ("csp_lda", "ts_lr", "xdawn_ts_lr", "bandpower_lr")
#: The settings of the hand-written pipelines below: given as params, they fix what the named pipelines tune.
FIXED = {
    "csp_lda": {"csp__n_components": 4},
    "ts_lr": {"logisticregression__C": 1.0},
    "xdawn_ts_lr": {"xdawncovariances__nfilter": 4, "logisticregression__C": 1.0},
    "bandpower_lr": {"logisticregression__C": 1.0},
}


def hand_written(name: str, sfreq: float):
    """The same baselines written directly with the field's libraries (not through neurofm)."""
    from mne.decoding import CSP
    from pyriemann.estimation import Covariances, XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from scipy.signal import welch
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    lr = LogisticRegression(max_iter=1000, random_state=0)
    if name == "csp_lda":
        return make_pipeline(CSP(n_components=4, reg="ledoit_wolf", log=True), LinearDiscriminantAnalysis())
    if name == "ts_lr":
        return make_pipeline(Covariances(estimator="oas"), TangentSpace(metric="riemann"), lr)
    if name == "xdawn_ts_lr":
        return make_pipeline(
            XdawnCovariances(nfilter=4, estimator="oas", xdawn_estimator="oas"),
            TangentSpace(metric="riemann"),
            StandardScaler(),
            lr,
        )

    def log_band_power(X):
        freqs, psd = welch(
            np.asarray(X, dtype=np.float64), fs=sfreq, nperseg=min(X.shape[-1], int(round(sfreq * 2))), axis=-1
        )
        bands = [(1, 4), (4, 8), (8, 13), (13, 30), (30, 45)]
        return np.concatenate(
            [np.log10(psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) + np.finfo(float).tiny) for lo, hi in bands],
            axis=1,
        )

    return make_pipeline(FunctionTransformer(log_band_power), StandardScaler(), lr)


def run_task(name: str, epochs, args) -> None:
    from sklearn.metrics import balanced_accuracy_score

    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    # Tuned by inner CV, as users get them; and with the hand-written pipelines' fixed settings (which switch the
    # search off), so that neurofm's fold scores can be checked against scikit-learn's below.
    models = {b: ClassicalModelConfig(estimator=b) for b in BASELINES}
    models |= {f"{b} (fixed)": ClassicalModelConfig(estimator=b, params=FIXED[b]) for b in BASELINES}
    for key in BACKBONES:
        models[f"{key} (random)"] = FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key=key, weights="random"),
            head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000}),
        )
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        n_permutations=args.permutations,
        cache_dir=args.cache_dir,
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="subject"),
    )
    y = epochs.metadata["label"].to_numpy()
    start = time.perf_counter()
    result = Experiment(cfg).run(epochs, y)
    seconds = time.perf_counter() - start
    summary = result.summary().set_index("Model")
    stats = result.get_statistics().set_index("Model")
    n_subjects = epochs.metadata["subject"].nunique()
    print(
        f"\n{name}: {len(epochs)} windows, {len(epochs.ch_names)} channels, {epochs.info['sfreq']:g} Hz, "
        f"{n_subjects} subjects, classes { ({k: int(v) for k, v in epochs.metadata['label'].value_counts().items()}) }; "
        f"{seconds:.0f} s"
    )
    print(f"{'model':<22}{'bal. acc.':>10}{'± sd':>8}{'p (perm.)':>11}")
    for model in models:
        p = stats.loc[model, "p_value"] if model in stats.index else float("nan")
        print(f"{model:<22}{summary.loc[model, 'mean']:>10.3f}{summary.loc[model, 'std']:>8.3f}{p:>11.3f}")

    # The same baselines by hand on the same folds, on microvolts (neurofm's working unit for every model).
    X = epochs.get_data() * 1e6
    splits = result.get_splits()
    scores = result.get_detailed_scores()
    worst = 0.0
    for baseline in BASELINES:
        fixed = f"{baseline} (fixed)"
        part = splits[splits["Model"] == fixed]
        for fold, rows in part.groupby("Fold"):
            train = rows.loc[rows["Set"] == "train", "SampleIndex"].to_numpy()
            test = rows.loc[rows["Set"] == "test", "SampleIndex"].to_numpy()
            estimator = hand_written(baseline, epochs.info["sfreq"]).fit(X[train].astype(np.float32), y[train])
            ours = scores.loc[(scores["Model"] == fixed) & (scores["Fold"] == fold), "Value"].iloc[0]
            theirs = balanced_accuracy_score(y[test], estimator.predict(X[test].astype(np.float32)))
            worst = max(worst, abs(ours - theirs))
    print(f"hand-written baselines (fixed settings) on the same folds: largest per-fold difference {worst:.2e}")


def load_tasks(data: Path):
    """The two tasks, as (name, mne.Epochs) pairs, from a folder laid out like ../shared/data."""
    import mne

    from neurofm.configs import PreprocessingConfig
    from neurofm.loaders import load_muse_csv, load_uci_smni

    mne.set_log_level("ERROR")
    muse = load_muse_csv(
        data / "muse-n170",
        tmin=0.0,
        tmax=1.0,
        reject_peak_to_peak=200e-6,
        preprocessing=PreprocessingConfig(l_freq=1.0, h_freq=30.0),
    )
    smni = load_uci_smni(data / "uci-eeg-smni", preprocessing=PreprocessingConfig(l_freq=1.0, h_freq=40.0))
    return [("muse-n170 face vs house", muse), ("uci-eeg-smni stimulus condition", smni)]


def task_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every script over these tasks takes: where the data and the cache are."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--cache-dir", default="~/.cache/neurofm")
    return parser


def main() -> None:
    parser = task_parser(__doc__)
    parser.add_argument("--permutations", type=int, default=50)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name, epochs in load_tasks(Path(args.data)):
        run_task(name, epochs, args)


if __name__ == "__main__":
    main()
