"""Builders: how each backbone's braindecode module is constructed for an adapted signal.

A spec's ``build`` (:class:`~neurofm.models.modelspec.ModelSpec`) is one of the
``_build_*`` functions here: ``build(signal, **model_kwargs) -> nn.Module``.
They import braindecode quietly, give each model the inputs it takes (channel
count or channel infos, window length, rate) and what it needs besides (REVE's
in-memory position bank, LUNA's row-stable frequency features). A spec's
``adapt_state_dict`` fits a checkpoint to the module built here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING
from unittest import mock

if TYPE_CHECKING:
    from ..adapt import AdaptedSignal


def _braindecode(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MNE montage rename, raised at braindecode import
        import braindecode.models as bd_models  # heavy: import neurofm does not load braindecode
    return getattr(bd_models, name)


def _quiet_build(cls_name: str, **kwargs):
    # The class's own head: two outputs where neurofm reads features beneath it; a decoder that trains that
    # head (``trainer.head="native"``) sizes it through model_kwargs.
    kwargs = {"n_outputs": 2, **kwargs}
    cls = _braindecode(cls_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nested-tensor and chs_info notices at construction
        return cls(**kwargs)


def _slice_temporal_embedding(state: dict, module) -> dict:
    # braindecode's Labram slices its temporal table by embedding size, not by the real
    # number of patches (braindecode issue 1153): a checkpoint built for 15 s fails on
    # 4 s windows unless the table is cut to the patches of the module built here.
    key = "temporal_embedding"
    if key in state and state[key].shape[1] > module.temporal_embedding.shape[1]:
        state = dict(state)
        state[key] = state[key][:, : module.temporal_embedding.shape[1]].clone()
    return state


@contextlib.contextmanager
def _reve_position_bank(signal: AdaptedSignal) -> Iterator[None]:
    """Give REVE a position bank holding the signal's positions, in memory.

    REVE's constructor builds its bank from a JSON file it downloads (to
    ``~/mne_data`` or ``REVE_POSITIONS_PATH``). The bank here is built from
    the positions the adaptation chose (the recording's, else MNE's
    template), so construction reads no network and writes no file anywhere.
    """
    import torch  # heavy: import neurofm does not load torch

    _braindecode("REVE")
    from braindecode.models import reve  # heavy: import neurofm does not load braindecode

    bank_class = reve.RevePositionBank

    def bank():
        # A genuine RevePositionBank (it pickles and serves REVE as the downloaded one would), filled
        # with the attributes its own __init__ sets from the JSON file, without reading one.
        made = bank_class.__new__(bank_class)
        torch.nn.Module.__init__(made)
        made.position_names = list(signal.positions)
        made.mapping = {name: i for i, name in enumerate(made.position_names)}
        table = torch.tensor([list(signal.positions[name]) for name in made.position_names], dtype=torch.float32)
        made.register_buffer("embedding", table.reshape(-1, 3), persistent=False)
        return made

    with mock.patch.object(reve, "RevePositionBank", bank):
        yield


def _build_labram(signal: AdaptedSignal, **kw):
    return _quiet_build("Labram", n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_cbramod(signal: AdaptedSignal, **kw):
    return _quiet_build("CBraMod", n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_codebrain(signal: AdaptedSignal, **kw):
    return _quiet_build("CodeBrain", n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_biot(signal: AdaptedSignal, **kw):
    return _quiet_build("BIOT", n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_bendr(signal: AdaptedSignal, **kw):
    return _quiet_build("BENDR", n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_eegpt(signal: AdaptedSignal, **kw):
    # Pretraining cut non-overlapping 64-sample patches; braindecode's default stride is 32 (overlapping),
    # which a checkpoint's config.json or model_kwargs may still set.
    kw = {"chan_proj_type": "none", "patch_stride": 64, **kw}
    return _quiet_build("EEGPT", chs_info=signal.chs_info(), n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_luna(signal: AdaptedSignal, **kw):
    from .luna_features import RowStableFrequencyEmbedder  # heavy: it imports torch, which import neurofm does not load

    module = _quiet_build("LUNA", chs_info=signal.chs_info(), n_times=signal.n_times, sfreq=signal.sfreq, **kw)
    # torch.angle rounds the tail of each thread's share differently: a window's phase depended on its row
    module.freq_embed = RowStableFrequencyEmbedder(module.freq_embed)
    return module


def _build_reve(signal: AdaptedSignal, **kw):
    with _reve_position_bank(signal):
        return _quiet_build("REVE", chs_info=signal.chs_info(), n_times=signal.n_times, sfreq=signal.sfreq, **kw)


def _build_signaljepa(signal: AdaptedSignal, **kw):
    kw = {"channel_embedding": "pretrain_aligned", **kw}
    return _quiet_build(
        "SignalJEPA_Contextual",
        chs_info=signal.chs_info(),
        n_times=signal.n_times,
        sfreq=signal.sfreq,
        **kw,
    )
