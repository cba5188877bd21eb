"""A simulated multi-subject EEG data set for the demo and tests.

Realistic enough to exercise every step a real recording would: a 1/f
background with per-channel spatial mixing, a subject-specific alpha rhythm,
a class-dependent motor rhythm (mu desynchronisation over the hemisphere
opposite the imagined hand) and a small class-dependent evoked deflection,
per-subject gains, units in volts and standard 10-20 channel names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["STANDARD_1020_19", "simulate_eeg_dataset"]

STANDARD_1020_19 = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip


def _pink_noise(rng: np.random.Generator, shape: tuple[int, ...], sfreq: float, exponent: float) -> np.ndarray:
    n_times = shape[-1]
    freqs = np.fft.rfftfreq(n_times, d=1.0 / sfreq)
    spectrum = rng.standard_normal(shape[:-1] + (len(freqs),)) + 1j * rng.standard_normal(shape[:-1] + (len(freqs),))
    scale = np.ones_like(freqs)
    scale[1:] = freqs[1:] ** (-exponent / 2.0)
    scale[0] = 0.0
    signal = np.fft.irfft(spectrum * scale, n=n_times, axis=-1)
    return signal / signal.std(axis=-1, keepdims=True)


def simulate_eeg_dataset(
    n_subjects: int = 6,
    n_windows_per_class: int = 20,
    sfreq: float = 160.0,
    window_seconds: float = 4.0,
    effect_size: float = 0.4,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """Simulate left- vs right-hand motor imagery windows from several subjects.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    n_windows_per_class : int
        Windows per class and subject.
    sfreq : float
        Sampling rate in Hz.
    window_seconds : float
        Window length in seconds.
    effect_size : float
        Relative depth of the class-dependent mu desynchronisation (0 = none).
    random_state : int
        Seed.

    Returns
    -------
    X : ndarray, shape (n_windows, 19, n_times)
        Windows in volts.
    y : ndarray of str
        ``"left_hand"`` or ``"right_hand"``.
    metadata : DataFrame
        Columns ``Subject``, ``Trial``.
    info : dict
        ``sfreq``, ``ch_names`` and ``units`` to pass to :meth:`Experiment.run`.
    """
    rng = np.random.default_rng(random_state)
    n_times = int(round(sfreq * window_seconds))
    n_ch = len(STANDARD_1020_19)
    t = np.arange(n_times) / sfreq
    idx = {name: i for i, name in enumerate(STANDARD_1020_19)}
    # Distance-like weights of the two motor sources over the scalp.
    left_motor = np.zeros(n_ch)
    right_motor = np.zeros(n_ch)
    for name, w in {"C3": 1.0, "F3": 0.4, "P3": 0.4, "T7": 0.3, "Cz": 0.3}.items():
        left_motor[idx[name]] = w
    for name, w in {"C4": 1.0, "F4": 0.4, "P4": 0.4, "T8": 0.3, "Cz": 0.3}.items():
        right_motor[idx[name]] = w
    occipital = np.zeros(n_ch)
    for name, w in {"O1": 1.0, "O2": 1.0, "P3": 0.4, "P4": 0.4, "Pz": 0.6, "P7": 0.5, "P8": 0.5}.items():
        occipital[idx[name]] = w

    windows, labels, subjects, trials = [], [], [], []
    for subject in range(n_subjects):
        gain = rng.uniform(0.7, 1.4)  # skull thickness / impedance
        alpha_freq = rng.uniform(9.0, 11.5)
        mu_freq = rng.uniform(10.0, 12.5)
        mu_amplitude = rng.uniform(2e-6, 6e-6)
        exponent = rng.uniform(1.6, 2.2)
        mixing = np.eye(n_ch) + 0.15 * rng.standard_normal((n_ch, n_ch))
        for label in ("left_hand", "right_hand"):
            for trial in range(n_windows_per_class):
                background = mixing @ _pink_noise(rng, (n_ch, n_times), sfreq, exponent) * 12e-6
                phase = rng.uniform(0, 2 * np.pi, size=3)
                alpha = np.sin(2 * np.pi * alpha_freq * t + phase[0]) * rng.uniform(4e-6, 8e-6)
                mu_left = np.sin(2 * np.pi * mu_freq * t + phase[1]) * mu_amplitude
                mu_right = np.sin(2 * np.pi * mu_freq * t + phase[2]) * mu_amplitude
                # Imagining one hand desynchronises the mu rhythm over the opposite motor cortex.
                if label == "left_hand":
                    mu_right = mu_right * (1.0 - effect_size)
                else:
                    mu_left = mu_left * (1.0 - effect_size)
                evoked = (1.0 if label == "left_hand" else -1.0) * 2e-6 * np.exp(-((t - 0.3) ** 2) / 0.005)
                signal = (
                    background
                    + occipital[:, None] * alpha[None, :]
                    + left_motor[:, None] * (mu_left + evoked)[None, :]
                    + right_motor[:, None] * (mu_right - evoked)[None, :]
                )
                windows.append(gain * signal)
                labels.append(label)
                subjects.append(f"sub-{subject + 1:02d}")
                trials.append(trial)
    X = np.stack(windows).astype(np.float64)
    y = np.array(labels)
    metadata = pd.DataFrame({"Subject": subjects, "Trial": trials})
    info = {"sfreq": sfreq, "ch_names": list(STANDARD_1020_19), "units": "V"}
    return X, y, metadata, info
