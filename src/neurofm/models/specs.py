"""Everything neurofm knows about each backbone, one :class:`ModelSpec` per model.

Adding a backbone means adding one entry to :data:`MODEL_SPECS`; the adapter,
the embedder, the registry table and the parametrised tests read it from here.
No other module branches on a model key. An entry names its builder
(:mod:`neurofm.models.builders`) and its forward adapter
(:mod:`neurofm.models.extract`); the type of an entry is in
:mod:`neurofm.models.modelspec`.

Facts come from braindecode 1.8.1's source, the original papers' code and
``MODEL_NOTES.md``; where a fact could not be checked offline the entry's
``notes`` say so.
"""

from __future__ import annotations

# Names defined here before the builders, forward adapters and spec type moved to their own modules stay
# importable from here: the "x as x" imports re-export those this module does not use (tests import _capture_output).
from .builders import (
    _braindecode,
    _build_bendr,
    _build_biot,
    _build_cbramod,
    _build_codebrain,
    _build_eegpt,
    _build_labram,
    _build_luna,
    _build_reve,
    _build_signaljepa,
    _slice_temporal_embedding,
)
from .builders import _quiet_build as _quiet_build
from .builders import _reve_position_bank as _reve_position_bank
from .extract import _capture_output as _capture_output
from .extract import (
    _classify_biot,
    _classify_labram,
    _extract_bendr,
    _extract_biot,
    _extract_cbramod,
    _extract_grid,
    _extract_labram,
    _extract_luna,
    _extract_tokens,
)
from .extract import _features_dict as _features_dict
from .extract import _grid_tokens as _grid_tokens
from .labram_original import convert_labram_checkpoint
from .modelspec import TRAIN_MODES, ModelSpec, PretrainingRecipe
from .modelspec import Features as Features

__all__ = ["ModelSpec", "MODEL_SPECS", "TRAIN_MODES"]

# peft 0.21's OFT layer reshapes inputs assuming one block size for every targeted layer and
# at most 3-D activations; on these models it fails or degenerates to 1x1 blocks (no effect).
_WITHOUT_OFT = tuple(m for m in TRAIN_MODES if m != "oft")


# --------------------------------------------------------------------------- channel tables


def _labram_channel_ids(ch_names: tuple[str, ...]):
    import torch  # heavy: import neurofm does not load torch
    from braindecode.models.labram import _LABRAM_CANONICAL_INDEX  # heavy: import neurofm does not load braindecode

    # Slot 0 is LaBraM's [CLS]; channel k of the vocabulary is slot k + 1.
    return torch.tensor([_LABRAM_CANONICAL_INDEX[n.upper()] + 1 for n in ch_names], dtype=torch.long)


def _labram_vocabulary() -> tuple[str, ...]:
    _braindecode("Labram")
    from braindecode.models.labram import LABRAM_CHANNEL_ORDER  # heavy: import neurofm does not load braindecode

    return tuple(LABRAM_CHANNEL_ORDER)


def _eegpt_vocabulary() -> tuple[str, ...]:
    _braindecode("EEGPT")
    from braindecode.models.eegpt import EEGPT_CHANNELS  # heavy: import neurofm does not load braindecode

    return tuple(EEGPT_CHANNELS)


def _signaljepa_vocabulary() -> tuple[str, ...]:
    _braindecode("SignalJEPA")
    from braindecode.models.signal_jepa import _PRETRAIN_CHS_INFO  # heavy: import neurofm does not load braindecode

    return tuple(ch["ch_name"] for ch in _PRETRAIN_CHS_INFO)


_BENDR_ORDER = (
    "FP1",
    "FP2",
    "F7",
    "F3",
    "FZ",
    "F4",
    "F8",
    "T7",
    "C3",
    "CZ",
    "C4",
    "T8",
    "T5",
    "P3",
    "PZ",
    "P4",
    "T6",
    "O1",
    "O2",
)
_TCP_PAIRS = (
    ("FP1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("FP2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("FP1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("FP2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
)  # fmt: skip
_TCP_ELECTRODES = tuple(dict.fromkeys(e for pair in _TCP_PAIRS for e in pair))


# --------------------------------------------------------------------------- the registry

_SPECS = [
    ModelSpec(
        key="labram",
        pretraining=PretrainingRecipe(
            tokenizer="vq_nsp",
            default_codebook_size=8192,
            n_codebooks=1,
            masked_model="labram",
            channel_ids=_labram_channel_ids,
        ),
        sources={
            "sfreq": "935963004/LaBraM dataset_maker/make_h5dataset_for_pretrain.py (rsfreq 200)",
            "units": "935963004/LaBraM dataset_maker/shock/utils/eegUtils.py (get_data(units='uV')); "
            "engine_for_pretraining.py (x / 100)",
            "reference": "935963004/LaBraM dataset_maker/shock/utils/eegUtils.py (no re-referencing)",
            "passband": "935963004/LaBraM dataset_maker/shock/utils/eegUtils.py (filter(0.1, 75), notch 50 Hz)",
            "channels": "935963004/LaBraM utils.py (standard_1020 vocabulary); braindecode labram.py LABRAM_CHANNEL_ORDER",
            "patching": "935963004/LaBraM modeling_finetune.py (patch 200, stride 200)",
            "normalization": "935963004/LaBraM engine_for_pretraining.py (only the / 100 scaling)",
            "cls": "935963004/LaBraM modeling_finetune.py (the cls token prepended to the patch tokens)",
        },
        tiny_kwargs=dict(num_layers=1, num_heads=2),
        display_name="LaBraM",
        braindecode_class="Labram",
        hub_repo="braindecode/labram-pretrained",
        embedding_dim=200,
        sfreq=200.0,
        channels="128 canonical names (any subset)",
        channel_mode="vocabulary",
        channel_source=_labram_vocabulary,
        amplitude_scale=0.01,
        patch_size=200,
        max_patches=15,
        min_times=200,
        passband=(0.1, 75.0),
        poolings=("mean", "max", "flatten", "cls"),
        cls_token="the cls token prepended to the patch tokens",
        lora_targets=("attn.proj", "mlp.0", "mlp.2"),
        weight_read_directly=("attn.qkv",),
        build=_build_labram,
        extract=_extract_labram,
        classify=_classify_labram,
        adapt_state_dict=_slice_temporal_embedding,
        # The authors' own files (labram-base.pth: student.*, pos_embed, time_embed ...) load as weights too.
        convert_checkpoint=convert_labram_checkpoint,
        notes="qkv adapters have no effect (forward reads qkv.weight directly). The published checkpoint "
        "has a 16-slot temporal table (15 patches); shorter windows get the table sliced at load time. "
        "The authors' labram-base.pth is recognised by its keys and renamed onto braindecode's names "
        "(neurofm.models.labram_original); its pretraining heads are dropped and reported.",
    ),
    ModelSpec(
        key="cbramod",
        sources={
            "sfreq": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (resample(200))",
            "units": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (to_data_frame: uV; "
            "samples under 100 uV kept); pretrain_trainer.py (x / 100)",
            "reference": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (TUEG as recorded)",
            "passband": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (filter(0.3, 75), "
            "notch 60 Hz)",
            "channels": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (19 TUEG channels); "
            "the paper: criss-cross attention takes any channels",
            "patching": "wjq-learning/CBraMod preprocessing/preprocessing_tueg_for_pretraining.py (30 s x 200-sample "
            "patches)",
            "normalization": "wjq-learning/CBraMod pretrain_trainer.py (only the / 100 scaling)",
        },
        tiny_kwargs=dict(n_layer=1, dim_feedforward=64),
        display_name="CBraMod",
        braindecode_class="CBraMod",
        hub_repo="braindecode/cbramod-pretrained",
        embedding_dim=200,
        sfreq=200.0,
        channels="any",
        channel_mode="any",
        sensor_types=("eeg", "mag", "grad"),  # any channels in any order: no electrode names or positions
        amplitude_scale=0.01,
        patch_size=200,
        min_times=200,
        passband=(0.3, 75.0),
        lora_targets=("self_attn_s", "self_attn_t", "linear1", "linear2"),
        linear_targets=("linear1", "linear2"),
        train_modes=_WITHOUT_OFT,
        head_prefixes=("final_layer.", "proj_out."),
        own_head=("proj_out.", "final_layer."),  # the class's forward maps the encoder through both
        short_attention=True,  # 19 channels of a patch, 4 patches of a channel (bf16 on 2 cores: 1.1-1.3x)
        build=_build_cbramod,
        extract=_extract_cbramod,
        notes="Embeddings come from the encoder, before proj_out (the pretraining reconstruction head).",
    ),
    ModelSpec(
        key="codebrain",
        pretraining=PretrainingRecipe(
            tokenizer="tf_dual",
            default_codebook_size=4096,
            n_codebooks=2,
            masked_model="codebrain",
            codebook_head_kwargs=("codebook_size_t", "codebook_size_f"),
        ),
        sources={
            "sfreq": "huggingface.co/braindecode/codebrain-pretrained commit 1ba4589 (TUEG, 19 channels, 200 Hz)",
            "units": "unconfirmed: the authors' code (jingyingma01/CodeBrain) was not readable; microvolts / 100 "
            "follows CBraMod, whose TUEG preprocessing CodeBrain describes reusing",
            "reference": "unconfirmed: TUEG as recorded is assumed (as CBraMod)",
            "passband": "unconfirmed: not stated in the sources read",
            "channels": "huggingface.co/braindecode/codebrain-pretrained commit 1ba4589 (19 channels of 10-20)",
            "patching": "braindecode codebrain.py (patch_size=200); arXiv 2506.09110",
            "normalization": "unconfirmed: as CBraMod (no per-window normalisation)",
        },
        tiny_kwargs=dict(num_res_layers=1),
        display_name="CodeBrain",
        braindecode_class="CodeBrain",
        hub_repo="braindecode/codebrain-pretrained",
        # The commit that added the weights ("Add CodeBrain pretrained weights (TUEG, 19ch 10-20, 200Hz)", on the
        # hub's commit page): a later push to main cannot change what weights=None loads.
        hub_revision="1ba45893685e6d5d2d51967cb48b1992c61668ef",
        embedding_dim=200,
        sfreq=200.0,
        channels="any",
        channel_mode="any",
        sensor_types=("eeg", "mag", "grad"),  # any channels in any order: no electrode names or positions
        amplitude_scale=0.01,
        patch_size=200,
        min_times=200,
        lora_targets=("attention", "output_linear"),
        linear_targets=("output_linear",),
        head_prefixes=("final_layer.", "lm_head_t.", "lm_head_f."),
        build=_build_codebrain,
        extract=_extract_grid,
        notes="reset_head is not implemented and the head width is tied to n_chans x n_times; the head is "
        "never used for embeddings. Amplitude convention (µV / 100) follows CBraMod, whose preprocessing "
        "CodeBrain reuses.",
    ),
    ModelSpec(
        key="biot",
        sources={
            "sfreq": "ycq091044/BIOT README.md (all models use 200 Hz)",
            "units": "ycq091044/BIOT utils.py (each channel / its 95th percentile: units cancel)",
            "reference": "ycq091044/BIOT README.md (16 TCP bipolar derivations)",
            "passband": "ycq091044/BIOT datasets/TUAB/process.py (resampling only); PREST preprocessing is private",
            "channels": "ycq091044/BIOT README.md (the 16 derivations FP1-F7 ... P4-O2, in this order)",
            "normalization": "ycq091044/BIOT utils.py (np.quantile(abs(X), 0.95, axis=-1))",
        },
        tiny_kwargs=dict(embed_dim=32, num_heads=2, num_layers=1),
        display_name="BIOT",
        braindecode_class="BIOT",
        hub_repo="braindecode/biot-pretrained-prest-16chs",
        embedding_dim=256,
        sfreq=200.0,
        channels="16 bipolar (double banana)",
        channel_mode="bipolar",
        channel_source=lambda: _TCP_ELECTRODES,
        bipolar_pairs=_TCP_PAIRS,
        interpolation=True,
        min_channel_fraction=0.75,
        normalization="p95_channel",
        min_times=200,
        lora_targets=("to_q", "to_k", "to_v", "to_out", "w1", "w2"),
        build=_build_biot,
        extract=_extract_biot,
        classify=_classify_biot,
        notes="Bipolar derivations are computed by position from 16 electrodes (old names T3-T6 accepted).",
    ),
    ModelSpec(
        key="bendr",
        sources={
            "sfreq": "SPOClab-ca/BENDR configs/pretraining.yml (sfreq: 256)",
            "units": "SPOClab-ca/dn3 dn3/transforms/instance.py MappingDeep1010 (min-max of the window: units cancel)",
            "reference": "SPOClab-ca/BENDR configs/pretraining.yml (TUEG as recorded)",
            "passband": "SPOClab-ca/BENDR configs/pretraining.yml (no filter)",
            "channels": "SPOClab-ca/dn3 dn3/transforms/instance.py To1020.EEG_20_div (19 names + SCALE); "
            "braindecode bendr.py BENDR_CHANNEL_ORDER",
            "untrained_channels": "SPOClab-ca/dn3 dn3/transforms/channels.py (exact-name mapping; T3/T4 are other "
            "Deep1010 slots) and SPOClab-ca/BENDR configs/pretraining.yml (no T3/T4 rename)",
            "normalization": "SPOClab-ca/dn3 dn3/transforms/instance.py MappingDeep1010 and dn3/utils.py "
            "min_max_normalize (one min/max over the window, unused slots reset to 0)",
            "scale_channel": "SPOClab-ca/BENDR configs/pretraining.yml (data_max 3276.7, data_min -1583.93); "
            "SPOClab-ca/dn3 dn3/transforms/instance.py MappingDeep1010 (scale channel)",
            "cls": "SPOClab-ca/BENDR dn3_ext.py BENDRClassification.features_forward (context[:, :, -1])",
        },
        tiny_kwargs=dict(encoder_h=32, contextualizer_hidden=64, transformer_layers=1, transformer_heads=2),
        display_name="BENDR",
        braindecode_class="BENDR",
        hub_repo="braindecode/braindecode-bendr",
        embedding_dim=512,
        sfreq=256.0,
        channels="19 10-20 + scale channel",
        channel_mode="fixed",
        channel_source=lambda: _BENDR_ORDER,
        interpolation=True,
        normalization="minmax_window",
        # TUEG labels T7/T8 by their old names T3/T4, which DN3 maps by exact name to other slots: the T7 and
        # T8 inputs were zero throughout pretraining (TUEG's T5/T6 did reach the T5/T6 slots).
        untrained_channels=("T7", "T8"),
        scale_channel_reference_uv=3276.7 - (-1583.9258304722666),  # the TUEG range of BENDR's pretraining config
        min_times=512,
        poolings=("mean", "max", "flatten", "cls"),
        lora_targets=("self_attn", "linear1", "linear2"),
        linear_targets=("linear1", "linear2"),
        build=_build_bendr,
        extract=_extract_bendr,
        cls_token="the last context vector, which the authors' classifier reads",
        notes="The 20th input is a relative-amplitude channel: peak-to-peak of the window over the TUEG range of "
        "BENDR's pretraining config (4860.6 µV). DN3 read TUEG in volts against that range in microvolts, so in "
        "pretraining this channel was probably close to -1 throughout (inferred from the code, not run on data). "
        "'cls' is the last context vector, as in the authors' classifier (the start token barely varies).",
    ),
    ModelSpec(
        key="eegpt",
        sources={
            "sfreq": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py (interpolated to 256 Hz)",
            "units": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py (volts x 1e3, microvolts / 1000: mV)",
            "reference": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py temporal_interpolation "
            "(x - x.mean(-2), before resampling)",
            "passband": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py (no filter stated)",
            "channels": "BINE022/EEGPT pretrain/modeling_pretraining.py CHANNEL_DICT (62 names); braindecode eegpt.py "
            "EEGPT_CHANNELS (the same order)",
            "untrained_channels": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py use_channels_names (58 "
            "names: AF7, AF8, PO5, PO6 absent)",
            "patching": "BINE022/EEGPT pretrain/engine_pretraining.py (patch_size 64, no patch_stride: non-overlapping)",
            "normalization": "BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py (none beyond the reference)",
        },
        train_modes=_WITHOUT_OFT,
        tiny_kwargs=dict(embed_dim=32, depth=1, num_heads=2),
        display_name="EEGPT",
        braindecode_class="EEGPT",
        hub_repo="braindecode/eegpt-pretrained",
        embedding_dim=2048,
        sfreq=256.0,
        channels="62-name vocabulary",
        channel_mode="vocabulary",
        channel_source=_eegpt_vocabulary,
        reference="average",
        untrained_channels=("AF7", "AF8", "PO5", "PO6"),
        amplitude_scale=1e-3,
        patch_size=64,
        min_times=64,
        lora_targets=("qkv", "proj", "fc1", "fc2"),
        build=_build_eegpt,
        extract=_extract_tokens,
        module_owned_keys=("chans_id",),
        published_kwargs={"patch_stride": 64},
        notes="Built with chan_proj_type='none' so channel names select the embeddings; the checkpoint's "
        "chans_id buffer is dropped so it cannot overwrite them. Pretraining: 58 channels, average reference, "
        "256 Hz, millivolts, non-overlapping 64-sample patches (braindecode's default stride, 32, overlaps).",
    ),
    ModelSpec(
        key="luna",
        sources={
            "sfreq": "pulp-bio/BioFoundation make_datasets/make_tueg_bipolar.py (resample(256)); docs/model/LUNA.md",
            "units": "pulp-bio/BioFoundation make_datasets/make_tueg_bipolar.py (get_data(units='uV')); z-scored after",
            "reference": "pulp-bio/BioFoundation make_datasets/make_tueg_bipolar.py (TUEG as TCP bipolar derivations; "
            "referential for the other corpora)",
            "passband": "pulp-bio/BioFoundation make_datasets/make_tueg_bipolar.py (filter(0.1, 75), notch 60 Hz)",
            "channels": "pulp-bio/BioFoundation docs/model/LUNA.md (any montage, placed by position)",
            "patching": "pulp-bio/BioFoundation docs/model/LUNA.md (patch 40, 5 s windows)",
            "normalization": "pulp-bio/BioFoundation tasks/pretrain_task_LUNA.py ChannelWiseNormalize (per channel, "
            "per window)",
            "positions": "pulp-bio/BioFoundation models/modules/channel_embeddings.py (standard_1005 via "
            "info.get_montage(): head frame; min-max scaled per axis in models/LUNA.py)",
        },
        train_modes=_WITHOUT_OFT,
        tiny_kwargs=dict(embed_dim=32, depth=1, num_heads=2, num_queries=2),
        display_name="LUNA",
        braindecode_class="LUNA",
        hub_repo="PulpBio/LUNA",
        hub_filename="LUNA_base.safetensors",
        embedding_dim=256,
        sfreq=256.0,
        channels="any (positions from info, else template)",
        channel_mode="any",
        needs_positions=True,
        sensor_types=("eeg", "mag", "grad"),  # placed by position, so MEG sensors need only their own positions
        normalization="zscore_channel",
        patch_size=40,
        min_times=40,
        lora_targets=("qkv_proj", "proj", "fc1", "fc2", "cross_attention"),
        linear_targets=("qkv_proj", "proj", "fc1", "fc2"),
        build=_build_luna,
        extract=_extract_luna,
        notes="Without positions LUNA silently lays channels on a line, so every channel needs a position (the "
        "recording's own, else the template's); LUNA rescales positions to its own range, so their frame does not matter. "
        "Features are read from model.norm (LUNA.forward has no return_features). The phase of its frequency "
        "features comes from numpy's angle, not torch's, whose scalar tail rounds differently from its SIMD body "
        "(neurofm.models.luna_features): with torch's, a window's embedding depended on its row in the batch.",
    ),
    ModelSpec(
        key="reve",
        sources={
            "sfreq": "elouayas/reve_eeg preprocessing/README.md (200 Hz)",
            "units": "elouayas/reve_eeg src/utils/data_loading.py (z-scored: units cancel)",
            "reference": "elouayas/reve_eeg src/utils/data_loading.py (as recorded)",
            "passband": "elouayas/reve_eeg: the corpus preprocessing scripts are not public",
            "channels": "braindecode reve.py RevePositionBank (any channel with a position)",
            "patching": "elouayas/reve_eeg src/configs/encoder/base.yaml (patch_size 200, patch_overlap 20)",
            "normalization": "elouayas/reve_eeg src/utils/data_loading.py (mean/std per recording session and channel, "
            "clip 15)",
            "positions": "elouayas/reve_eeg hf/reve-positions/positions.json (MNE standard_1005 in its native MNI "
            "frame, metres)",
        },
        train_modes=_WITHOUT_OFT,
        tiny_kwargs=dict(embed_dim=32, depth=1, heads=2, head_dim=16),
        display_name="REVE",
        braindecode_class="REVE",
        hub_repo="brain-bzh/reve-base",
        embedding_dim=512,
        sfreq=200.0,
        channels="any (positions from info, else template)",
        channel_mode="any",
        needs_positions=True,
        positions_frame="template",
        sensor_types=("eeg", "mag", "grad"),  # placed by position, so MEG sensors need only their own positions
        normalization="zscore_channel_clip15",
        normalization_statistics="recording",
        min_times=200,
        lora_targets=("to_qkv", "to_out", "net.1", "net.3"),
        head_prefixes=("final_layer.", "cls_query_token"),
        build=_build_reve,
        extract=_extract_grid,
        notes="Positions come from the recording's info, else from MNE's colin27 (standard_1005) template, never "
        "from the network, and all are given in that template's native frame, where REVE's position bank lives "
        "(a recording's head-frame positions are moved there through the template's fiducials). Pretraining "
        "normalised with each recording's statistics, which neurofm uses when the windows' recordings are known. "
        "Patches of 200 with overlap 20.",
    ),
    ModelSpec(
        key="signaljepa",
        sources={
            "sfreq": "braindecode signal_jepa.py docstring; huggingface.co/braindecode/signal-jepa (128 Hz)",
            "units": "braindecode signal_jepa.py docstring (volts x 1e6: microvolts)",
            "reference": "the S-JEPA code's scripts/preprocess_moabb_dataset.py, read in its public copy "
            "labhamlet/wavjepa (set_eeg_reference('average'), then resample to 128 Hz, then filter)",
            "passband": "braindecode signal_jepa.py docstring (0.5-40 Hz); labhamlet/wavjepa "
            "scripts/preprocess_moabb_dataset.py (l_freq 0.5, h_freq 40)",
            "channels": "braindecode signal_jepa.py (the 62 channels of MOABB Lee2019_SSVEP, checkpoint order)",
            "normalization": "braindecode signal_jepa.py docstring (microvolts, no normalisation)",
        },
        tiny_kwargs=dict(transformer__num_encoder_layers=1, transformer__num_decoder_layers=1),
        display_name="SignalJEPA",
        braindecode_class="SignalJEPA_Contextual",
        hub_repo="braindecode/signal-jepa",
        embedding_dim=64,
        sfreq=128.0,
        channels="62-channel layout (any subset)",
        channel_mode="vocabulary",
        channel_source=_signaljepa_vocabulary,
        reference="average",
        passband=(0.5, 40.0),
        min_times=256,
        # Only the encoder runs; the unused decoder layers would collect adapters that never get gradients.
        lora_targets=r"transformer\.encoder\.layers\.\d+\.(linear1|linear2|self_attn)",
        linear_targets=r"transformer\.encoder\.layers\.\d+\.(linear1|linear2)",
        mha_fastpath_bypasses_adapters=True,
        build=_build_signaljepa,
        extract=_extract_tokens,
        notes="In eval mode torch's transformer fast path reads the base weights, so adapters must be merged "
        "before prediction.",
    ),
]

MODEL_SPECS: dict[str, ModelSpec] = {spec.key: spec for spec in _SPECS}
