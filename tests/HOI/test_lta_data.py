"""AR and LTA datasets on the tiny twin: annotations, taxonomy, window enumeration, clip sampling, transforms."""
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from egot2.compat import import_pytorchvideo_transforms
from egot2.media import MediaError, video_info, write_video
from egot2.submission import lta_window_keys
from HOI.config import load_lta_cfg
from HOI.data.lta import (
    ClipReader,
    ClipTiming,
    LongTermAnticipationDataset,
    LtaAction,
    RecognitionDataset,
    annotation_path,
    enumerate_windows,
    load_taxonomy,
    read_lta_annotations,
)
from HOI.data.video_transforms import (
    SlowFastClipTransform,
    center_crop,
    pack_pathways,
    short_side_scale,
    uniform_temporal_indices,
)
from tests.twin import make_twin

CPU_CFG = "configs/lta/cpu/slowfast_r50_tiny.yaml"
TIMING = ClipTiming(num_frames=8, sampling_rate=8, target_fps=30)  # 2.133-s clips, as the paper's 32 x 2 / 30


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lta_dir(tmp_path_factory):
    _, data_dir = make_twin(tmp_path_factory.mktemp("twin"), tasks=("ar", "lta"))
    return data_dir / "lta"


def eval_transform(**overrides):
    settings = dict(num_frames=8, alpha=4, crop_size=64, jitter_scales=(72, 90), train=False)
    settings.update(overrides)
    return SlowFastClipTransform(**settings)


def copy_annotations(lta_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "annotations"
    shutil.copytree(lta_dir / "annotations", target)
    return target


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# -------------------------------------------------------------------------------------------------- annotations

def test_taxonomy_v1_loads_and_v2_sizes_are_refused(lta_dir, tmp_path):
    taxonomy = load_taxonomy(lta_dir / "annotations" / "fho_lta_taxonomy.json")
    assert (len(taxonomy["verbs"]), len(taxonomy["nouns"])) == (115, 478)
    v2 = tmp_path / "fho_lta_taxonomy.json"
    v2.write_text(json.dumps({"verbs": taxonomy["verbs"] + ["watch", "wave"], "nouns": taxonomy["nouns"]}))
    with pytest.raises(ValueError, match=r"fho_lta_taxonomy.json: field 'verbs' has 117 classes.*115"):
        load_taxonomy(v2)


def test_annotations_parse_and_bad_fields_name_file_item_and_field(lta_dir, tmp_path):
    path = annotation_path(lta_dir / "annotations", "train")
    actions = read_lta_annotations(path)
    assert len(actions) == len(json.loads(path.read_text())["clips"])
    assert all(0 <= a.verb < 115 and 0 <= a.noun < 478 for a in actions)
    assert actions[3].uid == f"{actions[3].clip_uid}_{actions[3].action_idx}"
    test = read_lta_annotations(annotation_path(lta_dir / "annotations", "test"), labelled=False)
    assert {(a.verb, a.noun) for a in test} == {(-1, -1)}
    with pytest.raises(ValueError, match="verb_label"):  # the test file has no labels
        read_lta_annotations(annotation_path(lta_dir / "annotations", "test"))

    annotations = copy_annotations(lta_dir, tmp_path)
    val = annotation_path(annotations, "val")
    edit_json(val, lambda d: d["clips"][4].pop("action_clip_end_sec"))
    with pytest.raises(ValueError, match=r"fho_lta_val.json: clips\[4\].*'action_clip_end_sec' is missing"):
        read_lta_annotations(val)
    edit_json(val, lambda d: d["clips"][4].update(action_clip_end_sec=99.0, noun_label=500))
    with pytest.raises(ValueError, match=r"clips\[4\].*'noun_label' = 500 is outside \[0, 478\)"):
        read_lta_annotations(val)
    edit_json(val, lambda d: d.pop("clips"))
    with pytest.raises(ValueError, match="field 'clips' missing"):
        read_lta_annotations(val)
    with pytest.raises(FileNotFoundError, match="fho_lta_train.json"):
        read_lta_annotations(tmp_path / "fho_lta_train.json")


def _actions(clip_uid, count, shuffle_seed=None):
    order = list(range(count))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    return [LtaAction(clip_uid, 10 + i, float(i), float(i) + 8.0, i % 7, i % 11, "hand-made") for i in order]


def test_window_enumeration_is_official_plus_one_for_training():
    actions = _actions("clipA", 25, shuffle_seed=1) + _actions("clipB", 22) + _actions("clipC", 30)
    windows = enumerate_windows(actions, num_input_clips=2, num_future=20)
    # M - Z - N windows per clip: 3 for clipA, 0 for clipB (22 actions), 8 for clipC.
    assert [w.key for w in windows] == [f"clipA_{11 + i}" for i in range(3)] + [f"clipC_{11 + i}" for i in range(8)]
    first = windows[0]
    assert [a.action_idx for a in first.observed] == [10, 11]
    assert [a.action_idx for a in first.future] == list(range(12, 32))
    extra = enumerate_windows(actions, num_input_clips=2, num_future=20, extra_window=True)
    # One more per clip; clipB's 22 = N + Z actions make exactly one complete window.
    assert len(extra) == len(windows) + 3 and [w.key for w in extra if w.clip_uid == "clipB"] == ["clipB_11"]
    assert extra[3].key == "clipA_14" and [a.action_idx for a in extra[3].future][-1] == 34
    with pytest.raises(ValueError, match="N >= 1"):
        enumerate_windows(actions, num_input_clips=0)


@pytest.mark.parametrize("split", ["val", "test"])
def test_dataset_keys_are_the_official_submission_keys(lta_dir, split):
    dataset = LongTermAnticipationDataset(lta_dir / "annotations", lta_dir / "clips", split, eval_transform(),
                                          TIMING)
    document = json.loads(annotation_path(lta_dir / "annotations", split).read_text())
    assert [w.key for w in dataset.windows] == lta_window_keys(document, num_input_clips=2, num_actions=20)
    assert len(dataset) == len(document["clips"]) - 2 - 20 > 0  # the tiny twin has one clip per split


# --------------------------------------------------------------------------------------------------- samples

def test_recognition_samples_on_the_twin(lta_dir):
    train = RecognitionDataset(lta_dir / "annotations", lta_dir / "clips", "train",
                               eval_transform(train=True), TIMING)
    val = RecognitionDataset(lta_dir / "annotations", lta_dir / "clips", "val", eval_transform(), TIMING)
    for dataset in (train, val):
        document = json.loads(annotation_path(lta_dir / "annotations", dataset.split).read_text())
        assert len(dataset) == len(document["clips"]) >= 24
    sample = train[5]
    assert sample["slow"].shape == (3, 2, 64, 64) and sample["fast"].shape == (3, 8, 64, 64)
    assert sample["slow"].dtype == torch.float32
    action = train.actions[5]
    assert (sample["verb"], sample["noun"], sample["uid"], sample["action_idx"]) == (
        action.verb, action.noun, action.uid, action.action_idx)
    assert (sample["start_sec"], sample["end_sec"]) == (action.start_sec, action.end_sec)
    # Slow = every alpha-th frame of fast (linspace picks 0 and 5 of 8 here).
    assert torch.equal(sample["slow"], sample["fast"][:, uniform_temporal_indices(8, 2)])
    first, again = val[2], val[2]
    assert torch.equal(first["fast"], again["fast"])  # evaluation is deterministic
    # Spawned dataloader workers receive a pickled copy.
    assert torch.equal(pickle.loads(pickle.dumps(val))[2]["fast"], first["fast"])
    batch = torch.utils.data.default_collate([val[0], val[1]])
    assert batch["fast"].shape == (2, 3, 8, 64, 64) and batch["verb"].dtype == torch.int64
    assert isinstance(batch["uid"], list) and len(batch["uid"]) == 2


def test_lta_samples_train_val_test(lta_dir):
    args = (lta_dir / "annotations", lta_dir / "clips")
    train = LongTermAnticipationDataset(*args, "train", eval_transform(train=True), TIMING)
    legacy = LongTermAnticipationDataset(*args, "train", eval_transform(train=True), TIMING, extra_train_window=False)
    assert len(train) == len(legacy) + 1 == 5
    sample = train[4]
    assert sample["slow"].shape == (2, 3, 2, 64, 64) and sample["fast"].shape == (2, 3, 8, 64, 64)
    window = train.windows[4]
    assert sample["key"] == window.key and sample["last_action_idx"] == window.observed[-1].action_idx
    assert sample["forecast_labels"].shape == (20, 2) and sample["forecast_labels"].dtype == torch.int64
    assert sample["forecast_labels"][0].tolist() == [window.future[0].verb, window.future[0].noun]
    assert sample["observed_labels"].tolist() == [[a.verb, a.noun] for a in window.observed]
    test = LongTermAnticipationDataset(*args, "test", eval_transform(), TIMING)
    assert (test[0]["forecast_labels"] == -1).all() and test[0]["fast"].shape == (2, 3, 8, 64, 64)


def test_from_config_reads_paths_from_the_data_root(lta_dir):
    cfg = load_lta_cfg(CPU_CFG, data_dir=str(lta_dir.parent))
    dataset = LongTermAnticipationDataset.from_config(cfg, "val")
    assert dataset.annotation_file == lta_dir / "annotations" / "fho_lta_val.json"
    assert dataset.transform.crop_size == 64 and not dataset.transform.train and dataset.reader.timing == TIMING
    assert RecognitionDataset.from_config(cfg, "train").transform.flip == "random"
    legacy = load_lta_cfg(CPU_CFG, opts=["DATA.LEGACY_ALWAYS_FLIP", "True", "DATA.LEGACY_CENTRE_TRAIN", "True"],
                          data_dir=str(lta_dir.parent))
    train = RecognitionDataset.from_config(legacy, "train")
    assert train.transform.flip == "always" and not train.random_position


# ------------------------------------------------------------------------------------------- temporal sampling

def test_clip_position_random_in_training_centred_otherwise(lta_dir):
    reader = ClipReader(lta_dir / "clips", TIMING)
    action = read_lta_annotations(annotation_path(lta_dir / "annotations", "train"))[6]
    centre = (action.start_sec + action.end_sec - TIMING.duration) / 2
    assert reader.clip_start(action, random=False) == pytest.approx(centre)
    generator = torch.Generator().manual_seed(0)
    starts = [reader.clip_start(action, random=True, generator=generator) for _ in range(50)]
    assert min(starts) >= action.start_sec and max(starts) <= action.end_sec - TIMING.duration
    assert max(starts) - min(starts) > 2.0  # spread over the 8-s window
    frames = reader.read(action)
    assert frames.dtype == np.uint8 and frames.shape == (64, 96, 128, 3)  # 2.133 s at 30 fps


def test_windows_past_the_video_end_are_clamped_and_counted(lta_dir, caplog):
    reader = ClipReader(lta_dir / "clips", TIMING)
    action = read_lta_annotations(annotation_path(lta_dir / "annotations", "train"))[-1]
    duration = video_info(reader.video_path(action.clip_uid))["duration"]
    beyond = LtaAction(action.clip_uid, action.action_idx, duration - 4.0, duration + 4.0, 1, 2, "hand-made")
    with caplog.at_level(logging.WARNING, logger="HOI.data.lta"):
        start = reader.clip_start(beyond, random=False)
        reader.clip_start(beyond, random=True)
    assert start == pytest.approx(duration - 2.0 - TIMING.duration / 2)  # centred in the clamped window
    assert reader.clamped[beyond.uid] == 2 and "clamped" in caplog.text and beyond.uid in caplog.text
    assert reader.read(beyond).shape[0] == 64


def test_missing_corrupt_and_short_videos_are_reported(lta_dir, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    actions = read_lta_annotations(annotation_path(lta_dir / "annotations", "val"))
    with pytest.raises(FileNotFoundError, match=f"{actions[0].clip_uid}.mp4: video of clip"):
        ClipReader(clips, TIMING).read(actions[0])

    source = lta_dir / "clips" / f"{actions[0].clip_uid}.mp4"
    (clips / source.name).write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    with pytest.raises(MediaError, match=rf"{actions[20].uid}.*fho_lta_val.json clips\[20\].*window"):
        ClipReader(clips, TIMING).read(actions[20])

    short = LtaAction("short", 0, 0.0, 8.0, 0, 0, "hand-made clips[0]")
    write_video(clips / "short.mp4", np.zeros((30, 32, 32, 3), np.uint8), fps=30)
    with pytest.raises(MediaError, match=r"short.mp4: video lasts 1.000 s, shorter than one input clip"):
        ClipReader(clips, TIMING).read(short)


# ------------------------------------------------------------------------------------------------- transforms

def test_primitives_match_pytorchvideo_and_torchvision():
    import_pytorchvideo_transforms()  # the reference implementation needs the torchvision alias
    import pytorchvideo.transforms.functional as pvf  # noqa: PLC0415

    video = torch.rand(3, 64, 45, 60) * 255
    assert torch.equal(uniform_temporal_indices(64, 32), torch.linspace(0, 63, 32).long())
    assert torch.equal(pvf.uniform_temporal_subsample(video, 32, temporal_dim=1),
                       video[:, uniform_temporal_indices(64, 32)])
    assert torch.allclose(short_side_scale(video, 72), pvf.short_side_scale(video, 72))
    assert short_side_scale(video, 72).shape == (3, 64, 72, 96)
    assert torch.equal(center_crop(video, 40), TF.center_crop(video, [40, 40]))
    slow, fast = pack_pathways(video, 4, temporal_dim=1)
    assert slow.shape == (3, 16, 45, 60) and fast is video


def _noise_clip(seed, frames=20, height=72, width=96):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_training_transform_crops_and_flips_all_clips_of_a_window_jointly():
    clip = _noise_clip(0)
    transform = eval_transform(train=True)
    for seed in range(5):
        slow, fast = transform([clip, clip.copy()], generator=torch.Generator().manual_seed(seed))
        assert fast.shape == (2, 3, 8, 64, 64) and slow.shape == (2, 3, 2, 64, 64)
        assert torch.equal(fast[0], fast[1]) and torch.equal(slow[0], slow[1])
    # Different draws give different crops (the augmentation is random at all).
    first = transform([clip], generator=torch.Generator().manual_seed(1))[1]
    second = transform([clip], generator=torch.Generator().manual_seed(2))[1]
    assert not torch.equal(first, second)


def test_normalisation_and_evaluation_view():
    grey = np.full((16, 72, 96, 3), round(0.45 * 255), np.uint8)
    slow, fast = eval_transform()([grey])
    assert fast.abs().max() < 0.01 and slow.shape == (1, 3, 2, 64, 64)
    clip = _noise_clip(3)
    expected = center_crop(torch.from_numpy(clip).permute(3, 0, 1, 2).float()[:, uniform_temporal_indices(20, 8)],
                           64)
    expected = (expected / 255 - 0.45) / 0.225
    assert torch.allclose(eval_transform()([clip])[1][0], expected, atol=1e-5)  # short side 72 already: no resize


@pytest.mark.parametrize("flip, expected", [("none", (40, 0)), ("always", (0, 40))])
def test_flip_modes_legacy_always_versus_none(flip, expected):
    clip = _noise_clip(4, height=64, width=64)
    # Scale 64..64 and crop 64 of a 64x64 clip: the only randomness left is the flip.
    transform = SlowFastClipTransform(num_frames=8, alpha=4, crop_size=64, jitter_scales=(64, 64), train=True,
                                      flip=flip)
    plain = eval_transform(jitter_scales=(64, 64))([clip])[1]
    generator = torch.Generator().manual_seed(0)
    outputs = [transform([clip], generator=generator)[1] for _ in range(40)]
    unflipped = sum(torch.equal(out, plain) for out in outputs)
    flipped = sum(torch.equal(out, plain.flip(-1)) for out in outputs)
    assert (unflipped, flipped) == expected


def test_random_flip_is_a_fair_coin():
    clip = _noise_clip(5, height=64, width=64)
    transform = SlowFastClipTransform(num_frames=8, alpha=4, crop_size=64, jitter_scales=(64, 64), train=True)
    plain = eval_transform(jitter_scales=(64, 64))([clip])[1]
    generator = torch.Generator().manual_seed(0)
    flipped = sum(not torch.equal(transform([clip], generator=generator)[1], plain) for _ in range(200))
    assert 70 < flipped < 130


def test_transform_rejects_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="flip must be one of"):
        SlowFastClipTransform(flip="sometimes")
    with pytest.raises(ValueError, match="multiple of alpha"):
        SlowFastClipTransform(num_frames=10, alpha=4)
    with pytest.raises(ValueError, match="exceeds the smallest short side"):
        SlowFastClipTransform(crop_size=300, jitter_scales=(256, 320))
    with pytest.raises(ValueError, match="one frame size"):
        eval_transform()([_noise_clip(0), _noise_clip(1, height=80)])
