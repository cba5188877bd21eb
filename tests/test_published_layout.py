"""A checkpoint in the layout the published repositories use loads into neurofm as braindecode loads it.

For each of the nine backbones a tiny model is written with braindecode's
``save_pretrained`` (``config.json`` + weights, what ``push_to_hub`` uploads).
braindecode's own ``from_pretrained`` of that folder is the reference: the
backbone neurofm loads holds the same tensors, except the ones neurofm's
strict loading leaves out on purpose (the spec's classification head and the
inputs the model builds for itself), and gives the same features.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from neurofm.adapt import plan_adaptation
from neurofm.data import SignalInfo
from neurofm.models import builders, create_backbone, get_model_spec, list_model_keys
from neurofm.simulate import STANDARD_1020_19


def _signal(key):
    info = SignalInfo(sfreq=160.0, ch_names=tuple(STANDARD_1020_19), units=("V",) * 19)
    return plan_adaptation(get_model_spec(key), info, 640).target


def _braindecode_load(module_class, folder, signal):
    # REVE fetches a position bank from the hub when built; neurofm hands it one in memory (offline), and so
    # does this reference build, with the same positions.
    bank = builders._reve_position_bank(signal) if module_class.__name__ == "REVE" else contextlib.nullcontext()
    with bank:
        return module_class.from_pretrained(str(folder))


@pytest.mark.parametrize("key", list_model_keys())
def test_a_save_pretrained_folder_loads_as_braindecode_loads_it(key, tmp_path):
    spec = get_model_spec(key)
    signal = _signal(key)
    written = create_backbone(key, signal, "random", model_kwargs=spec.tiny_kwargs, random_state=21).module
    folder = tmp_path / key
    written.save_pretrained(str(folder))
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}

    # With neurofm's flags: torch picks kernels by requires_grad even without autograd (CodeBrain's attention).
    reference = _braindecode_load(type(written), folder, signal).eval().requires_grad_(False)
    loaded = create_backbone(key, signal, str(folder))
    ours = loaded.module

    skipped = set(loaded.report["skipped_keys"])
    for name in skipped:  # each key left out is one the spec names, never a silent loss
        assert name.startswith(spec.head_prefixes) or name in spec.module_owned_keys, name
    theirs = reference.state_dict()
    mine = ours.state_dict()
    compared = 0
    for name, tensor in theirs.items():
        if name in skipped or name.startswith(spec.head_prefixes) or name in spec.module_owned_keys:
            continue
        assert name in mine, f"{key}: braindecode loads {name}, neurofm's backbone lacks it"
        if spec.adapt_state_dict is None:
            assert torch.equal(mine[name], tensor), f"{key}: {name} differs from braindecode's"
        compared += 1
    assert compared == loaded.report["loaded_tensors"] > 0

    x = torch.randn(2, len(signal.ch_names), signal.n_times, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = {
            name: spec.extract(m, x, signal)
            for name, m in [("ours", ours), ("written", written.eval()), ("braindecode", reference)]
        }
    # neurofm loads the very model that was saved: the same features, to the bit.
    for mine_out, saved_out in zip(features["ours"], features["written"], strict=True):
        assert (mine_out is None and saved_out is None) or torch.equal(mine_out, saved_out), key
    # braindecode's reload: to the bit, except LUNA by float32 rounding (neurofm computes the phase features row by
    # row, so a window's features do not depend on its batch neighbours).
    braindecode_exact = torch.equal(features["braindecode"][0], features["written"][0])
    for mine_out, theirs_out in zip(features["ours"], features["braindecode"], strict=True):
        if mine_out is None:
            assert theirs_out is None
        elif braindecode_exact:
            assert torch.equal(mine_out, theirs_out), f"{key}: features differ from braindecode's own load"
        else:
            assert key == "luna", f"{key}: braindecode no longer reloads what it saved"
            torch.testing.assert_close(mine_out, theirs_out, rtol=1e-5, atol=1e-5)
