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


_SELECTION_FIELDS = (
    "subjects",
    "sessions",
    "tasks",
    "runs",
    "tmin",
    "tmax",
    "window",
    "stride",
    "event_id",
    "reject_peak_to_peak",
)
# What each source's loader reads of the fields above (see neurofm.loaders.from_config.load_data).
_SOURCE_FIELDS: dict[str, set[str]] = {
    "eegmmi": {"subjects", "runs", "tmin", "tmax", "event_id", "reject_peak_to_peak"},
    "muse_csv": {"tmin", "tmax", "reject_peak_to_peak"},
    "uci_smni": {"subjects", "tmin", "tmax", "reject_peak_to_peak"},
    "recording": {"tmin", "tmax", "window", "stride", "event_id", "reject_peak_to_peak"},
    "bids": set(_SELECTION_FIELDS),
    "moabb": {"subjects", "tmin", "tmax", "reject_peak_to_peak"},
}
_HOW_TO_CHOOSE = {
    ("muse_csv", "event_id"): " (its classes are the Muse Marker0 codes: 1 house, 2 face)",
    ("uci_smni", "event_id"): " (its classes are the trials' stimulus conditions: s1_obj, s2_match, s2_nomatch)",
    ("moabb", "event_id"): (
        " (the data set's own event_id gives the classes; with a paradigm, choose them with "
        "moabb.paradigm_params: {events: [...]})"
    ),
    ("moabb", "tmin"): " (with a paradigm, set the window in moabb.paradigm_params: {tmin: ..., tmax: ...})",
    ("moabb", "tmax"): " (with a paradigm, set the window in moabb.paradigm_params: {tmin: ..., tmax: ...})",
    ("eegmmi", "window"): " (EEGMMI windows follow its cues: set tmin/tmax)",
}


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
        Selection for loaders that take it: ``subjects`` for ``eegmmi``,
        ``uci_smni``, ``moabb`` and ``bids``; ``runs`` for ``eegmmi`` and ``bids``;
        ``sessions`` and ``tasks`` for ``bids`` (BIDS entities). Numeric labels
        match whatever their padding (``runs: [4]`` selects ``run-04``). A source
        that has no such selection refuses the field rather than ignore it.
    tmin, tmax : float | None
        Window around each event in seconds (``uci_smni``: the part of each
        1-s trial to keep).
    window, stride : float | None
        Fixed-length windows instead of events (``recording`` and ``bids`` only).
    event_id : list of str | dict of str to int | None
        The events to cut windows around, hence the classes; ``None`` keeps
        every event (and says which classes that gave). A list names them:
        annotation descriptions (``[left, right]``), or for ``eegmmi`` its
        classes (``[left_fist, right_fist]``, add ``rest`` for the T0 periods).
        A mapping ``{name: code}`` selects its keys just the same, and its
        codes are the trigger values to look for when a recording has no
        annotations but a stim channel; otherwise they only number the events
        of the windows (``epochs.events``). The label of each window is always
        the name. ``recording``, ``bids`` and ``eegmmi`` only: the other
        sources define their own classes and refuse it.
    reject_peak_to_peak : float | None
        Drop windows above this peak-to-peak amplitude (volts); the count per
        file is logged and kept in the result's ``meta["data"]["rejected"]``.
    label : str
        Metadata column holding the class of each window.
    preprocessing : PreprocessingConfig
        Applied to each recording before windows are cut.
    """

    source: Literal["eegmmi", "muse_csv", "uci_smni", "recording", "bids", "moabb"]
    path: str | None = None
    moabb: MoabbConfig | None = None
    subjects: list[Any] | None = None
    sessions: list[Any] | None = None
    tasks: list[Any] | None = None
    runs: list[Any] | None = None
    tmin: float | None = None
    tmax: float | None = None
    window: float | None = None
    stride: float | None = None
    event_id: list[str] | dict[str, int] | None = None
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

    @model_validator(mode="after")
    def _event_id_names_events_once(self) -> DataConfig:
        if self.event_id is None:
            return self
        names = list(self.event_id)
        if not names:
            raise ValueError("event_id is empty; name the events to keep, e.g. event_id: [left, right], or remove it.")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"event_id names {repeated} more than once; name each event once.")
        if isinstance(self.event_id, dict):
            codes = list(self.event_id.values())
            shared = sorted({c for c in codes if codes.count(c) > 1})
            if shared:
                raise ValueError(
                    f"event_id gives the code(s) {shared} to several names; give each name its own code, or list "
                    "the names only (event_id: [left, right])."
                )
        return self

    @model_validator(mode="after")
    def _no_field_the_loader_ignores(self) -> DataConfig:
        # A field the source's loader does not read would otherwise be dropped without a word.
        uses = _SOURCE_FIELDS[self.source]
        if self.source == "moabb" and self.moabb is not None and self.moabb.paradigm is not None:
            uses = {"subjects"}  # the paradigm cuts and rejects its own epochs
        given = [name for name in _SELECTION_FIELDS if getattr(self, name) is not None and name not in uses]
        if given:
            how = _HOW_TO_CHOOSE.get((self.source, given[0]), "")
            raise ValueError(
                f"data.{given[0]} does not apply to source {self.source!r}, whose loader reads only "
                f"{sorted(uses) or 'none of the selection fields'}; remove data.{', data.'.join(given)}" + how + "."
            )
        return self


class RunConfig(ExperimentConfig):
    """An experiment plus its data source and output folder: what ``neurofm run`` reads.

    Parameters
    ----------
    data : DataConfig
        Where the windows come from and how the recordings are preprocessed.
    output_dir : str
        Results folder, relative to the config file (``neurofm run --out``
        overrides it); running the same file again resumes the finished folds.

    Every other field is the :class:`ExperimentConfig`'s, except ``windows``:
    here the data section cuts the windows.
    """

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
