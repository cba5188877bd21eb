"""Simulated multi-subject EEG (and MEG+EEG) data sets for the demo, examples and tests.

Realistic enough to exercise every step a real recording would: a 1/f
background with per-channel spatial mixing, a subject-specific alpha rhythm,
a class-dependent motor rhythm (mu desynchronisation over the hemisphere
opposite the imagined hand) and a small class-dependent evoked deflection,
per-subject gains, units in volts and standard 10-20 channel names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import mne

__all__ = ["STANDARD_1020_19", "simulate_eeg_dataset", "simulate_meg_eeg_epochs", "simulate_meg_eeg_recordings"]

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


def _good_meg_eeg_channels(info: mne.Info) -> tuple[mne.Info, np.ndarray, np.ndarray]:
    """The good MEG and EEG channels of ``info``, their types and which are MEG; a ValueError when it has no layout."""
    import mne  # heavy: import neurofm does not load mne

    info = mne.pick_info(info, mne.pick_types(info, meg=True, eeg=True, exclude="bads"))
    types = np.array(info.get_channel_types())
    is_meg = np.isin(types, ("mag", "grad"))
    locs = np.array([ch["loc"][:3] for ch in info["chs"]])
    placed = np.isfinite(locs).all(axis=1) & (np.abs(locs).sum(axis=1) > 0)
    if not (is_meg.any() and (types == "eeg").any() and placed.all()) or info["dev_head_t"] is None:
        raise ValueError(
            "info needs good MEG and EEG channels with positions and a device-to-head transform; "
            "read it from a real MEG+EEG recording, e.g. mne.io.read_info('sample_audvis_raw.fif'). "
            "mne.create_info gives no positions: EEG ones come from info.set_montage(...), MEG ones only "
            "from a recording."
        )
    return info, types, is_meg


def _dipole_layout(
    rng: np.random.Generator, n_subjects: int, n_bg: int, r0: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every subject's dipole positions in the head frame and unit orientations, each ``(n_subjects * (2 n_bg + 2), 3)``.

    A population layout, jittered per subject as anatomy would be. n_bg dipoles of random orientation
    on a cortex-like shell and n_bg radial ones (gyral crowns): a sphere makes the latter MEG-silent,
    and they supply the EEG variance that random cortical sources alone leave ~3x too small
    relative to MEG. The last two are the left and right auditory cortex (superior temporal plane).
    """
    d = rng.standard_normal((8 * n_bg, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d = d[d[:, 2] > -0.3][: 2 * n_bg]
    auditory = [[-0.05, -0.005, 0.0], [0.05, -0.005, 0.0]]
    rel = np.concatenate([d * radius * rng.uniform(0.5, 0.75, (2 * n_bg, 1)), auditory])
    ori = np.concatenate([rng.standard_normal((n_bg, 3)), d[n_bg:], [[0, 0.3, 1], [0, 0.3, 1]]])
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    # Auditory jitter is kept small: at 4 mm the subjects' own left/right asymmetry in MEG
    # already rivals the class effect and leave-subject-out decoding falls to chance.
    jitter = rng.standard_normal((n_subjects,) + rel.shape) * np.r_[[0.004] * 2 * n_bg, 0.002, 0.002][:, None]
    rel = rel + jitter
    rel *= np.minimum(1.0, 0.8 * radius / np.linalg.norm(rel, axis=-1, keepdims=True))  # inside the skull
    ori = ori + 0.3 * rng.standard_normal((n_subjects,) + ori.shape)
    ori[:, n_bg : 2 * n_bg] = rel[:, n_bg : 2 * n_bg]  # exactly radial again after the jitter
    ori /= np.linalg.norm(ori, axis=-1, keepdims=True)
    return (r0 + rel).reshape(-1, 3), ori.reshape(-1, 3)


def _sss_projector(info: mne.Info, types: np.ndarray, is_meg: np.ndarray, r0: np.ndarray) -> np.ndarray:
    """The projection of the MEG channels onto their internal SSS basis, as MaxFilter applies it."""
    import mne  # heavy: import neurofm does not load mne

    # MNE refuses to SSS data whose info records SSS already, so the basis comes from a fresh
    # MEG-only info with the same sensors, about the recording's own SSS origin if it has one.
    meg_info = mne.create_info(list(np.array(info.ch_names)[is_meg]), info["sfreq"], list(types[is_meg]))
    for new, old in zip(meg_info["chs"], np.array(info["chs"])[is_meg], strict=True):
        new.update(old)
    meg_info["dev_head_t"] = info["dev_head_t"]
    done = [p["max_info"]["sss_info"] for p in info["proc_history"] if p["max_info"]["sss_info"]]
    origin = done[0]["origin"] if done and done[0]["frame"] == mne.io.constants.FIFF.FIFFV_COORD_HEAD else r0
    basis, pinv, _, n_in = mne.preprocessing.compute_maxwell_basis(meg_info, origin=origin, verbose=False)
    return basis[:, :n_in] @ pinv[:n_in]


def _subject_windows(
    rng: np.random.Generator,
    gain: np.ndarray,
    sss: np.ndarray,
    is_meg: np.ndarray,
    noise_std: np.ndarray,
    dominance: np.ndarray,
    t: np.ndarray,
    sf: float,
) -> np.ndarray:
    """One subject's windows ``(n_win, n_channels, n_times)``: 1/f background, auditory response and rhythm, noise.

    ``gain`` maps the subject's dipoles (the 2 n_bg background ones, then the left and right
    auditory cortex) to the sensors; ``dominance`` ``(n_win, 2)`` scales each window's left and
    right auditory response.
    """
    n_win, n_bg, n_times = len(dominance), (gain.shape[1] - 2) // 2, len(t)
    background = _pink_noise(rng, (n_win, 2 * n_bg, n_times), sf, rng.uniform(1.0, 1.5))
    moment = np.repeat([62e-9, 265e-9], n_bg) / np.sqrt(n_bg) * rng.lognormal(0.0, 0.3, 2 * n_bg)
    background *= moment[:, None]
    latency = rng.uniform(0.09, 0.12) + 0.01 * rng.standard_normal((n_win, 1))
    wave = -np.exp(-(((t - latency) / 0.025) ** 2)) + 0.6 * np.exp(-(((t - latency - 0.08) / 0.04) ** 2))
    aud_gain = rng.uniform(0.6, 1.4)
    evoked = 50e-9 * aud_gain * dominance[:, :, None] * rng.lognormal(0, 0.2, (n_win, 1, 1)) * wave[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n_win, 2, 1))
    tau = 100e-9 * aud_gain / dominance[:, :, None] * np.sin(2 * np.pi * rng.uniform(8.5, 11.5) * t + phase)
    moments = np.concatenate([background, evoked + tau], axis=1)
    x = rng.uniform(0.8, 1.25) * np.einsum("cd,wdt->wct", gain, moments)
    x += noise_std * rng.standard_normal(x.shape)
    x[:, is_meg] = np.einsum("ij,wjt->wit", sss, x[:, is_meg])
    return x


def _auditory_epochs(
    X: np.ndarray, info: mne.Info, labels: np.ndarray, n_subjects: int, t: np.ndarray, sfreq: float | None
) -> mne.EpochsArray:
    """The simulated windows as epochs: events and metadata per window, EEG average-referenced, resampled to ``sfreq``."""
    import mne  # heavy: import neurofm does not load mne

    n_win, n_times = len(labels), len(t)
    all_labels = np.tile(labels, n_subjects)
    codes = np.where(all_labels == "left", 1, 2)
    events = np.column_stack([np.arange(len(X)) * n_times, np.zeros(len(X), int), codes])
    metadata = pd.DataFrame({"Subject": np.repeat(np.arange(1, n_subjects + 1), n_win), "label": all_labels})
    epochs = mne.EpochsArray(
        X, info, events, tmin=t[0], event_id={"left": 1, "right": 2}, proj=False, metadata=metadata, verbose=False
    )
    epochs.del_proj()  # an SSP from the recording would cut rank below that of SSS alone
    epochs.set_eeg_reference("average", projection=False, verbose=False)
    if sfreq is not None and sfreq != info["sfreq"]:
        epochs.resample(sfreq, verbose=False)
    return epochs


def simulate_meg_eeg_epochs(
    info: mne.Info,
    n_subjects: int = 4,
    n_windows_per_class: int = 12,
    window_seconds: float = 1.0,
    effect_size: float = 0.75,
    sfreq: float | None = None,
    random_state: int = 0,
) -> mne.EpochsArray:
    """Simulate left- vs right-ear auditory MEG+EEG epochs from several subjects on a real sensor layout.

    Fields come from current dipoles in MNE's spherical head model fitted to the digitisation of ``info``
    and the real sensor geometry. The background is 1/f activity of several tens of cortical dipoles
    plus white sensor noise; MEG is then projected onto the internal SSS basis as MaxFilter would, so
    its rank is ~70 as in real Maxwell-filtered data. Median per-channel standard deviations are
    close to those of the MNE sample recording band-passed 1-40 Hz: ~16 uV EEG, ~190 fT
    magnetometers, ~36 fT/cm gradiometers.

    Parameters
    ----------
    info : mne.Info
        Measurement info of a recording with MEG and EEG channel positions and ``dev_head_t``,
        e.g. ``mne.io.read_info("sample_audvis_raw.fif")``.
    n_subjects : int
        Number of subjects.
    n_windows_per_class : int
        Windows per class and subject.
    window_seconds : float
        Window length in seconds, starting 0.2 s before the tone.
    effect_size : float
        Contralateral dominance (0 = none): the auditory cortex opposite the stimulated ear responds
        ``1 + effect_size`` times more strongly and its ~10 Hz rhythm is as many times weaker.
    sfreq : float | None
        Sampling rate in Hz; None keeps that of ``info``.
    random_state : int
        Seed.

    Returns
    -------
    epochs : mne.EpochsArray
        Good MEG and EEG channels of ``info`` (bads dropped) in T, T/m and V, EEG average-referenced.
        Events ``"left"`` and ``"right"``; ``metadata`` has columns ``Subject`` (int) and ``label``.
    """
    import mne  # heavy: import neurofm does not load mne

    info, types, is_meg = _good_meg_eeg_channels(info)
    rng = np.random.default_rng(random_state)
    sf, n_bg, n_win = info["sfreq"], 60, 2 * n_windows_per_class
    n_times = round(window_seconds * sf)
    t = np.arange(n_times) / sf - 0.2
    labels = np.repeat(["left", "right"], n_windows_per_class)
    contra = np.where(labels == "left", 1, 0)  # left ear -> right auditory cortex (dipole 1)
    dominance = np.ones((n_win, 2))
    dominance[np.arange(n_win), contra] += effect_size
    noise_std = np.select([types == "mag", types == "grad"], [20e-15, 8e-13], 2e-6)[:, None]
    # These matrices are small; BLAS threads only add overhead, and stall badly on a busy machine.
    with threadpool_limits(1):
        sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
        pos, ori = _dipole_layout(rng, n_subjects, n_bg, sphere["r0"], sphere.radius)
        dipoles = mne.Dipole(np.zeros(len(pos)), pos, np.ones(len(pos)), ori, np.ones(len(pos)))
        fwd, _ = mne.make_forward_dipole(dipoles, sphere, info, verbose=False)
        gain = fwd["sol"]["data"].reshape(len(types), n_subjects, -1).transpose(1, 0, 2)
        sss = _sss_projector(info, types, is_meg, sphere["r0"])
        data = [_subject_windows(rng, gain[s], sss, is_meg, noise_std, dominance, t, sf) for s in range(n_subjects)]
    return _auditory_epochs(np.concatenate(data), info, labels, n_subjects, t, sfreq)


def simulate_meg_eeg_recordings(info: mne.Info, n_subjects: int = 4, **kwargs) -> list[mne.io.RawArray]:
    """Continuous MEG+EEG recordings, one per subject, of the auditory task of :func:`simulate_meg_eeg_epochs`.

    Each recording holds that subject's simulated windows back to back, with
    an annotation (``"left"`` or ``"right"``) at each tone, so that windows cut
    from ``tmin=-0.2`` to ``tmax=window_seconds - 0.2`` around the annotations
    are exactly the simulated epochs.

    Parameters
    ----------
    info : mne.Info
        As for :func:`simulate_meg_eeg_epochs`.
    n_subjects : int
        Number of subjects, hence of recordings.
    **kwargs
        Passed to :func:`simulate_meg_eeg_epochs`.

    Returns
    -------
    recordings : list of mne.io.RawArray
        In T, T/m and V, subject ``i + 1`` in ``recordings[i]``.
    """
    import mne  # heavy: import neurofm does not load mne

    epochs = simulate_meg_eeg_epochs(info, n_subjects=n_subjects, **kwargs)
    sfreq = epochs.info["sfreq"]
    n_times = len(epochs.times)
    tone = int(np.argmin(np.abs(epochs.times)))  # the sample of each window at which its tone starts
    recordings = []
    for subject in range(1, n_subjects + 1):
        windows = epochs[epochs.metadata["Subject"].to_numpy() == subject]
        data = np.concatenate(list(windows.get_data()), axis=-1)
        raw = mne.io.RawArray(data, windows.info, verbose=False)
        onsets = (np.arange(len(windows)) * n_times + tone) / sfreq
        labels = windows.metadata["label"].to_numpy(dtype=str)
        raw.set_annotations(mne.Annotations(onsets, np.zeros(len(onsets)), labels))
        recordings.append(raw)
    return recordings
