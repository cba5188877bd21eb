"""The data of a ``neurofm run`` config: where recordings come from and how they are preprocessed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import BaseConfig
from .experiment import ExperimentConfig


class PreprocessingConfig(BaseConfig):
    """Processing of each continuous recording before it is cut into windows.

    Applied identically for every model, per recording; nothing here is fitted
    on data. Steps run in this order: channel picking, re-referencing, notch,
    band-pass, resampling.

    Parameters
    ----------
    picks : str | list of str | None
        Channel types or names to keep (``"eeg"``).
    reference : "average" | list of str | None
        Re-reference to the average or to the named channels.
    notch : float | list of float | None
        Line-noise frequencies to notch out (e.g. 50 or [50, 100]).
    l_freq, h_freq : float | None
        Band-pass edges in Hz (FIR, zero phase).
    resample : float | None
        New sampling rate in Hz.
    """

    picks: str | list[str] | None = "eeg"
    reference: Literal["average"] | list[str] | None = None
    notch: float | list[float] | None = None
    l_freq: float | None = Field(None, ge=0)
    h_freq: float | None = Field(None, gt=0)
    resample: float | None = Field(None, gt=0)


class MoabbConfig(BaseConfig):
    """A MOABB data set (and optional paradigm) named in a config.

    Parameters
    ----------
    dataset : str
        Class name in ``moabb.datasets`` (e.g. ``"BNCI2014_001"``).
    dataset_params : dict
        Keyword arguments of that class.
    paradigm : str | None
        Class name in ``moabb.paradigms`` (e.g. ``"LeftRightImagery"``); ``None``
        cuts windows from the continuous runs after neurofm's preprocessing.
    paradigm_params : dict
        Keyword arguments of the paradigm.
    """

    dataset: str
    dataset_params: dict[str, Any] = Field(default_factory=dict)
    paradigm: str | None = None
    paradigm_params: dict[str, Any] = Field(default_factory=dict)


class DataConfig(BaseConfig):
    """Where ``neurofm run`` reads windows from.

    Parameters
    ----------
    source : {"eegmmi", "muse_csv", "uci_smni", "recording", "bids", "moabb"}
        The loader (see :mod:`neurofm.loaders`).
    path : str | None
        Folder or file; relative paths are relative to the config file. Every
        source but ``moabb`` needs one.
    moabb : MoabbConfig | None
        The MOABB data set and paradigm (``source: moabb`` only).
    subjects, sessions, tasks, runs : list | None
        Selection for loaders that take it (BIDS entities for ``bids``).
    tmin, tmax : float | None
        Window around each event in seconds.
    window, stride : float | None
        Fixed-length windows instead of events (``recording`` only).
    event_id : dict of str to int | None
        Events to keep (``recording``).
    reject_peak_to_peak : float | None
        Drop windows above this peak-to-peak amplitude (volts).
    label : str
        Metadata column holding the class of each window.
    preprocessing : PreprocessingConfig
        Applied to each recording before windows are cut.
    """

    source: Literal["eegmmi", "muse_csv", "uci_smni", "recording", "bids", "moabb"]
    path: str | None = None
    moabb: MoabbConfig | None = None
    subjects: list[Any] | None = None
    sessions: list[str] | None = None
    tasks: list[str] | None = None
    runs: list[Any] | None = None
    tmin: float | None = None
    tmax: float | None = None
    window: float | None = None
    stride: float | None = None
    event_id: dict[str, int] | None = None
    reject_peak_to_peak: float | None = Field(None, gt=0)
    label: str = "label"
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)

    @model_validator(mode="after")
    def _source_has_what_it_reads(self) -> DataConfig:
        if self.source == "moabb" and self.moabb is None:
            raise ValueError(
                "source 'moabb' needs a 'moabb' section naming the data set, e.g. moabb: {dataset: BNCI2014_001}."
            )
        if self.source != "moabb" and self.moabb is not None:
            raise ValueError(f"the 'moabb' section only applies to source 'moabb', not {self.source!r}.")
        if self.source != "moabb" and self.path is None:
            raise ValueError(f"source {self.source!r} needs a 'path' to the recordings.")
        return self


class RunConfig(ExperimentConfig):
    """An experiment plus its data source and output folder: what ``neurofm run`` reads."""

    data: DataConfig
    output_dir: str = "neurofm-results"

    @model_validator(mode="after")
    def _windows_cut_by_the_data_section(self) -> RunConfig:
        if self.windows is not None:
            raise ValueError(
                "'windows' is for continuous recordings passed to Experiment.run; in a neurofm run config the data "
                "section cuts the windows: move tmin/tmax/window/stride/event_id under 'data'."
            )
        return self

    @model_validator(mode="after")
    def _picks_keep_the_sensor_types(self) -> RunConfig:
        # The default picks keep EEG only; asking for MEG then would fail only after every file is read.
        picks = self.data.preprocessing.picks
        meg = sorted({"meg", "mag", "grad"} & set(self.sensor_types or ()))
        if (
            meg
            and picks is not None
            and not {"meg", "mag", "grad", "data", "all"} & set([picks] if isinstance(picks, str) else picks)
        ):
            raise ValueError(
                f"sensor_types asks for {meg}, but data.preprocessing.picks is {picks!r}, which drops MEG channels "
                "before windows are cut; set data.preprocessing.picks to [meg, eeg] (or 'data')."
            )
        return self
