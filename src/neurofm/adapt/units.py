"""Units: every input in microvolts, or EEG-equivalent microvolts for MEG, before the model's own scaling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..data import UNIT_TO_SI, SignalInfo, si_base

if TYPE_CHECKING:
    from ..models.specs import ModelSpec

# Every backbone here was pretrained on EEG in microvolts, so every input becomes microvolts, or
# "EEG-equivalent microvolts" for MEG, before the model's own scaling. The MEG rule makes a
# typical sensor as large as a typical EEG channel of the same brain: in the MNE sample
# recording (Neuromag Vectorview after SSS, 1 s, band-passed 1-40 Hz) the median standard
# deviation is 16.24 uV over 60 EEG channels, 188.6 fT over 102 magnetometers and 36.14 fT/cm
# over 204 gradiometers; so 1 fT counts as 0.0861 uV and 1 fT/cm as 0.449 uV.
MEG_TYPICAL_STD = {"eeg_uV": 16.24, "mag_fT": 188.6, "grad_fT_per_cm": 36.14}
_WORKING_UNIT = {
    "V": ("uV", 1e6),
    "T": ("EEG-equivalent uV", 1e15 * MEG_TYPICAL_STD["eeg_uV"] / MEG_TYPICAL_STD["mag_fT"]),
    "T/m": ("EEG-equivalent uV", 1e13 * MEG_TYPICAL_STD["eeg_uV"] / MEG_TYPICAL_STD["grad_fT_per_cm"]),
}


def working_unit_scale(units: tuple[str, ...] | list[str]) -> np.ndarray:
    """Per channel, the factor that takes its unit to microvolts (EEG) or EEG-equivalent microvolts (MEG).

    One rule for every model, backbones and classical baselines alike, so
    that EEG, magnetometers and gradiometers enter with comparable amplitudes.
    """
    return np.array([UNIT_TO_SI[u] * _WORKING_UNIT[si_base(u)][1] for u in units])


# How the unit names read in the adaptation record.
_UNIT_NAMES = {
    "V": "volts",
    "mV": "millivolts",
    "uV": "microvolts",
    "µV": "microvolts",
    "μV": "microvolts",
    "nV": "nanovolts",
    "T": "tesla",
    "pT": "picotesla",
    "fT": "femtotesla",
    "T/m": "tesla per metre",
    "fT/cm": "femtotesla per centimetre",
}


def _plan_units(spec: ModelSpec, info: SignalInfo, matrix: np.ndarray, steps: list) -> np.ndarray:
    """The channel matrix followed by the conversion to working units and the model's own scaling (a linear map too)."""
    matrix = matrix * working_unit_scale(info.units)[None, :] * spec.amplitude_scale
    # One clause per operation, each with its factor: the record says what was done to the numbers, in order.
    unit_detail = "; ".join(_describe_conversion(unit) for unit in dict.fromkeys(info.units))
    if {"T", "T/m"} & {si_base(u) for u in info.units}:
        unit_detail += (
            f" (1 fT = {_WORKING_UNIT['T'][1] / 1e15:.4g} uV, 1 fT/cm = {_WORKING_UNIT['T/m'][1] / 1e13:.4g} uV: "
            "typical MEG and EEG amplitudes of the MNE sample recording made equal)"
        )
    unit_detail += _describe_scale(spec.amplitude_scale)
    steps.append({"step": "units", "detail": unit_detail})
    return matrix


def _describe_conversion(unit: str) -> str:
    """``"volts to microvolts (x1e6)"``: one unit's conversion to the working unit, with its factor."""
    target, per_si = _WORKING_UNIT[si_base(unit)]
    factor = UNIT_TO_SI[unit] * per_si
    name = _UNIT_NAMES.get(unit, unit)
    if target == "uV":
        target = "microvolts"
        if np.isclose(factor, 1.0):
            return f"{name} as they are"
    else:
        target = "EEG-equivalent microvolts"
    return f"{name} to {target} (x{_number(factor)})"


def _describe_scale(scale: float) -> str:
    """The model's own amplitude scaling, as the operation it is (a division by 100, not "multiplied by 0.01")."""
    if scale == 1.0:
        return ""
    if scale < 1.0:
        return f", then divided by {_number(1.0 / scale)} (the model's input scale)"
    return f", then multiplied by {_number(scale)} (the model's input scale)"


def _number(value: float) -> str:
    """``1e6`` rather than Python's ``1e+06``; plain digits where they are short."""
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text
