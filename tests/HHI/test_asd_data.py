"""HHI.data.asd: TalkNet inputs (MFCC, crop geometry, smoothing), dynamic batches, robustness, the tiny twin."""
import json
import math

import cv2
import numpy as np
import pytest
import scipy.signal
import soundfile
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from egot2 import media
from HHI.data.asd import (
    ActiveSpeakerDataset,
    DynamicBatchSampler,
    augment_faces,
    collate_active_speaker,
    crop_talknet_face,
    fit_mfcc_rows,
    mix_audio,
    read_asd_csv,
    smooth_track,
    talknet_mfcc,
)
from tests.twin import make_twin

CLIP = "0a1b2c3d-0000-4000-8000-00000000c11b"  # 36 characters, like an Ego4D clip uid
HEIGHT, WIDTH = 72, 96


# ------------------------------------------------------------------------------------------
# A hand-built ASD folder
# ------------------------------------------------------------------------------------------


def _box(frame, x=30.0, y=20.0, width=24.0, height=28.0):
    return {"frame": frame, "x": x, "y": y, "width": width, "height": height, "clip_frame": None}


def _write_layout(root, lines, num_images=30, wav_frames=None, seed=0):
    """Write ``root/{ego4d/csv,ego4d/bbox,video_imgs,wave}`` for one clip.

    ``lines``: dicts with ``track``, ``start``, ``n``, ``labels`` and ``boxes`` (raw records) of a chunk; the csv is
    written for ``split`` ("train" unless the line says otherwise).
    """
    rng = np.random.default_rng(seed)
    frames_dir = root / "video_imgs" / CLIP
    for frame in range(1, num_images + 1):
        image = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
        image[:, :, 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :]
        image[18:50, 28:56] = rng.integers(120, 255, size=(32, 28, 3), dtype=np.uint8)
        media.write_image(frames_dir / f"img_{frame:05d}.jpg", image)
    samples_count = int((wav_frames if wav_frames is not None else num_images + 1) / 30 * 16000)
    time = np.arange(samples_count) / 16000
    media.write_wav(root / "wave" / f"{CLIP}.wav", 0.3 * np.sin(2 * np.pi * 440 * time) * (1 + 0.5 * np.sin(time)))
    csv = {"train": [], "val": []}
    for line in lines:
        chunk_id = f"{CLIP}:{line['track']}:0"
        csv[line.get("split", "train")].append(f"{chunk_id}\t{line['n']}\t30.0\t{line['labels']}\t{line['start']}\n")
        bbox = root / "ego4d" / "bbox" / f"{chunk_id}.json"
        bbox.parent.mkdir(parents=True, exist_ok=True)
        bbox.write_text(json.dumps(line["boxes"]))
    for split, rows in csv.items():
        path = root / "ego4d" / "csv" / f"active_speaker_{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(rows))
    return root


def _line(track, start, n, split="train", labels=None, boxes=None):
    labels = labels if labels is not None else [int(k % 3 == 0) for k in range(n)]
    boxes = boxes if boxes is not None else [_box(frame) for frame in range(start, start + n)]
    return {"track": track, "start": start, "n": n, "labels": labels, "boxes": boxes, "split": split}


@pytest.fixture
def layout(tmp_path):
    lines = [_line("t1", 1, 12), _line("t2", 3, 8), _line("t3", 2, 5), _line("v1", 4, 10, split="val")]
    return _write_layout(tmp_path / "asd", lines)


# ------------------------------------------------------------------------------------------
# MFCC
# ------------------------------------------------------------------------------------------


def _reference_mfcc(signal):
    """python_speech_features' MFCC recomputed independently: explicit DFT and DCT matrices, plain loops."""
    signal = np.asarray(signal, dtype=np.float64)
    frame_length, frame_step, nfft, sample_rate = 333, 133, 512, 16000  # round-half-up of 333.33 and 133.33
    emphasised = signal.copy()
    emphasised[1:] = signal[1:] - 0.97 * signal[:-1]
    count = 1 if len(signal) <= frame_length else 1 + math.ceil((len(signal) - frame_length) / frame_step)
    padded = np.concatenate([emphasised, np.zeros((count - 1) * frame_step + frame_length - len(signal))])
    frames = np.stack([padded[i * frame_step:i * frame_step + frame_length] for i in range(count)])
    bins, times = np.arange(nfft // 2 + 1), np.arange(frame_length)
    dft = np.exp(-2j * np.pi * np.outer(bins, times) / nfft)  # zero padding to nfft = summing over the frame only
    power = np.abs(frames @ dft.T) ** 2 / nfft
    mel = 2595 * np.log10(1 + np.linspace(0, 8000, 2) / 700)
    points = np.linspace(mel[0], mel[1], 28)
    edges = np.floor((nfft + 1) * (700 * (10 ** (points / 2595) - 1)) / sample_rate)
    bank = np.zeros((26, nfft // 2 + 1))
    for j in range(26):
        for k in bins:
            if edges[j] <= k < edges[j + 1]:
                bank[j, k] = (k - edges[j]) / (edges[j + 1] - edges[j])
            elif edges[j + 1] <= k < edges[j + 2]:
                bank[j, k] = (edges[j + 2] - k) / (edges[j + 2] - edges[j + 1])
    log_mel = np.log(np.maximum(power @ bank.T, np.finfo(float).eps))
    index = np.arange(26)
    dct = np.array([np.sqrt((1 if k == 0 else 2) / 26) * np.cos(np.pi * k * (2 * index + 1) / 52) for k in range(13)])
    cepstra = log_mel @ dct.T
    cepstra *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    cepstra[:, 0] = np.log(power.sum(axis=1))
    return cepstra


def test_mfcc_of_a_pure_tone_matches_an_independent_computation():
    time = np.arange(int(0.5 * 16000)) / 16000
    tone = 0.1 * np.sin(2 * np.pi * 1000 * time)
    ours = talknet_mfcc(tone)
    reference = _reference_mfcc(tone)
    assert ours.shape == reference.shape == (1 + math.ceil((8000 - 333) / 133), 13)
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-9)
    # The energy column is the log of the frame's power, and for a steady tone it is the same in every full frame.
    frame = np.r_[tone[:1], tone[1:333] - 0.97 * tone[:332]]
    np.testing.assert_allclose(ours[0, 0], np.log(np.sum(np.abs(np.fft.rfft(frame, 512)) ** 2) / 512), rtol=1e-12)
    assert np.ptp(ours[1:-2, 0]) < 0.05


def test_mfcc_exact_against_python_speech_features_when_installed():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    for size in (1, 333, 334, 5333, 16007):
        audio = 0.1 * rng.standard_normal(size)
        expected = psf.mfcc(audio, 16000, numcep=13, winlen=0.025 * 25 / 30, winstep=0.010 * 25 / 30)
        np.testing.assert_array_equal(talknet_mfcc(audio), expected)


def test_mfcc_rows_are_wrap_padded_to_four_per_frame():
    frames = 10
    window = int(frames / 30 * 16000)
    features = talknet_mfcc(np.random.default_rng(1).standard_normal(window))
    assert features.shape == (39, 13)  # 5333 samples give one row short of 4 per frame
    fitted = fit_mfcc_rows(features, 4 * frames)
    assert fitted.shape == (40, 13)
    np.testing.assert_array_equal(fitted[:39], features)
    np.testing.assert_array_equal(fitted[39], features[0])  # wrap-around, not zeros
    np.testing.assert_array_equal(fit_mfcc_rows(features, 20), features[:20])
    with pytest.raises(ValueError, match="empty"):
        talknet_mfcc(np.zeros(0))


# ------------------------------------------------------------------------------------------
# Box smoothing and crop geometry
# ------------------------------------------------------------------------------------------


def test_two_tap_centre_filter_is_not_recursive_and_median_kernel_is_capped():
    records = [_box(frame, x=10.0 * k, y=5.0, width=8.0, height=6.0) for k, frame in enumerate(range(1, 5))]
    geometry = smooth_track(records)
    # centres 4, 14, 24, 34 -> c'[i] = 0.8 c[i-1] + 0.2 c[i] from the UNfiltered values
    np.testing.assert_allclose(geometry.centre_x, [4.0, 6.0, 16.0, 26.0])
    np.testing.assert_allclose(geometry.centre_y, [8.0, 8.0, 8.0, 8.0])
    np.testing.assert_allclose(geometry.half_size, [4.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(geometry.frames, [1, 2, 3, 4])
    # 20 frames: kernel min(21, 13) = 13. At the last frame the window holds seven 100s and six zero pads
    # (median 100); a 21-frame kernel would reach back to the 1s and give 1.
    sizes = [1.0] * 13 + [100.0] * 7
    records = [_box(k + 1, width=2 * s, height=s) for k, s in enumerate(sizes)]
    half_size = smooth_track(records).half_size
    assert half_size[-1] == 100.0
    np.testing.assert_array_equal(half_size, scipy.signal.medfilt(np.array(sizes), 13))
    # an even count uses the next odd kernel: n = 4 -> 5
    sizes = [10.0, 50.0, 10.0, 12.0]
    records = [_box(k + 1, width=2 * s, height=s) for k, s in enumerate(sizes)]
    with pytest.warns(UserWarning, match="kernel_size"):  # scipy zero-pads a kernel longer than the track
        expected = scipy.signal.medfilt(np.array(sizes), 5)
    np.testing.assert_array_equal(smooth_track(records).half_size, expected)


def _naive_crop(grey, centre_x, centre_y, half_size):
    """The original recipe, literally: pad the whole frame, slice, resize to 224, keep the centre."""
    border = int(half_size * 1.8)
    padded = np.pad(grey, ((border, border), (border, border)), mode="constant", constant_values=110)
    y, x = centre_y + border, centre_x + border
    face = padded[int(y - half_size):int(y + half_size * 1.8), int(x - half_size * 1.4):int(x + half_size * 1.4)]
    if face.size == 0:
        return None
    return cv2.resize(face, (224, 224))[56:168, 56:168]


def test_crop_geometry_equals_padding_the_whole_frame():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(HEIGHT, WIDTH), dtype=np.uint8)
    cases = [(48.0, 36.0, 12.0), (0.0, 0.0, 9.5), (95.5, 71.2, 30.0), (10.3, 60.7, 0.7), (48.0, 36.0, 80.0)]
    cases += [tuple(rng.uniform([0, 0, 0.6], [WIDTH + 20, HEIGHT + 20, 60])) for _ in range(200)]
    for centre_x, centre_y, half_size in cases:
        expected = _naive_crop(grey, centre_x, centre_y, half_size)
        ours = crop_talknet_face(grey, centre_x, centre_y, half_size)
        if expected is None:
            assert ours is None
        else:
            assert ours.shape == (112, 112) and ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, expected)


def test_box_centre_lands_above_the_middle_of_the_crop():
    # rows [cy - s, cy + 1.8 s) -> the centre is 1/2.8 of the way down the 224 resize, i.e. row 80 - 56 = 24 of the
    # 112 crop; columns are symmetric (column 56).
    grey = np.zeros((200, 200), dtype=np.uint8)
    grey[99:102, 79:82] = 255
    face = crop_talknet_face(grey, centre_x=80.0, centre_y=100.0, half_size=20.0)
    rows, cols = np.nonzero(face == face.max())
    assert abs(rows.mean() - 24) <= 2 and abs(cols.mean() - 56) <= 2
    # The padding value shows where the crop leaves the frame.
    corner = crop_talknet_face(grey, centre_x=0.0, centre_y=0.0, half_size=20.0)
    assert corner[0, 0] == 110 and corner[-1, -1] == 0


def test_augmentations():
    faces = np.random.default_rng(0).integers(0, 256, size=(3, 112, 112), dtype=np.uint8)
    np.testing.assert_array_equal(augment_faces(faces, "orig"), faces)
    np.testing.assert_array_equal(augment_faces(faces, "flip"), faces[:, :, ::-1])
    np.testing.assert_array_equal(augment_faces(faces, "rotate", angle=0.0), faces)
    cropped = augment_faces(faces, "crop", crop_side=80, crop_x=10, crop_y=20)
    assert cropped.shape == (3, 112, 112)
    np.testing.assert_array_equal(cropped[1], cv2.resize(faces[1, 20:100, 10:90], (112, 112)))
    with pytest.raises(ValueError, match="kind"):
        augment_faces(faces, "shear")


def test_audio_mix_float_and_legacy_int16_cast():
    rng = np.random.default_rng(0)
    audio, noise = 0.1 * rng.standard_normal(1000), 0.1 * rng.standard_normal(600)
    mixed = mix_audio(audio, noise, snr_db=3.0)
    wrapped = np.pad(noise, (0, 400), mode="wrap")
    gain = np.sqrt(10 ** ((10 * np.log10(np.mean(audio ** 2) + 1e-4) - 10 * np.log10(np.mean(wrapped ** 2) + 1e-4)
                           - 3.0) / 10))
    np.testing.assert_allclose(mixed, audio + gain * wrapped)
    legacy = mix_audio(audio, noise, snr_db=3.0, legacy_int16=True)
    assert legacy.dtype == np.int16
    assert np.count_nonzero(legacy) < 0.01 * len(legacy)  # the original's cast silences an RMS-0.1 signal


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, field", [
    (f"{CLIP}:t:0\t3\t30.0\t[0, 1, 0]", "5 tab-separated"),
    (f"{CLIP}:t:0\tthree\t30.0\t[0, 1, 0]\t1", "'n'"),
    (f"{CLIP}:t:0\t3\t30.0\t[0, 1]\t1", "'labels' has 2"),
    (f"{CLIP}:t:0\t3\t30.0\t[0, 2, 0]\t1", "'labels'"),
    (f"{CLIP}:t:0\t3\t30.0\tzero\t1", "'labels'"),
    (f"{CLIP}:t:0\t3\t25.0\t[0, 1, 0]\t1", "'fps'"),
    ("short:t:0\t3\t30.0\t[0, 1, 0]\t1", "'chunk id'"),
])
def test_malformed_csv_lines_name_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "active_speaker_train.csv"
    path.write_text(f"{CLIP}:ok:0\t2\t30.0\t[0, 1]\t5\n{line}\n")
    with pytest.raises(ValueError, match=field) as error:
        read_asd_csv(path)
    assert f"{path}:2" in str(error.value)
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_asd_csv(tmp_path / "nothing.csv")


def test_csv_fields(layout):
    lines = read_asd_csv(layout / "ego4d" / "csv" / "active_speaker_train.csv")
    assert [(line.chunk_id.split(":")[1], line.num_frames, line.start_frame) for line in lines] == [
        ("t1", 12, 1), ("t2", 8, 3), ("t3", 5, 2)]
    assert lines[0].clip_uid == CLIP and lines[0].fps == 30.0
    assert list(lines[0].labels) == [int(k % 3 == 0) for k in range(12)]


# ------------------------------------------------------------------------------------------
# Dataset on the hand-built layout
# ------------------------------------------------------------------------------------------


def test_sample_keys_shapes_and_alignment(layout):
    dataset = ActiveSpeakerDataset(layout, "train")
    assert len(dataset) == 3 and dataset.num_frames == [12, 8, 5] and dataset.start_frames == [1, 3, 2]
    sample = ActiveSpeakerDataset(layout, "val")[0]
    assert set(sample) == {"faces", "mfcc", "labels", "track_id", "start_frame", "index"}
    assert sample["faces"].shape == (10, 112, 112) and sample["faces"].dtype == torch.float32
    assert sample["mfcc"].shape == (40, 13) and sample["mfcc"].dtype == torch.float32
    assert sample["labels"].dtype == torch.int64 and sample["labels"].tolist() == [int(k % 3 == 0) for k in range(10)]
    assert sample["track_id"] == f"{CLIP}:v1:0" and sample["start_frame"] == 4 and sample["index"] == 0
    assert 0 <= sample["faces"].min() and sample["faces"].max() <= 255
    assert torch.equal(sample["faces"], sample["faces"].round())  # grey levels, not normalised
    # The faces are TalkNet crops of the smoothed boxes of frames 4..13.
    geometry = smooth_track([_box(frame) for frame in range(4, 14)])
    image = media.read_image(layout / "video_imgs" / CLIP / "img_00007.jpg")
    expected = crop_talknet_face(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), geometry.centre_x[3],
                                 geometry.centre_y[3], geometry.half_size[3])
    np.testing.assert_array_equal(sample["faces"][3].numpy(), expected)
    # The audio is the RMS-normalised window [4/30 s, 14/30 s) of the clip's wav.
    samples, rate = soundfile.read(layout / "wave" / f"{CLIP}.wav", dtype="float64")
    window = samples[int(4 / 30 * rate):int(14 / 30 * rate)]
    window = window * (0.1 / max(1e-4, np.sqrt(np.mean(window ** 2))))
    np.testing.assert_allclose(sample["mfcc"].numpy(), fit_mfcc_rows(talknet_mfcc(window), 40).astype(np.float32))


def test_gaps_are_interpolated_and_invalid_boxes_dropped(tmp_path):
    boxes = [_box(2), _box(3), _box(6, x=36.0), _box(4, width=0.0), _box(40)]  # frame 40 lies outside [2, 8)
    root = _write_layout(tmp_path / "asd", [_line("g", 2, 6, boxes=boxes), _line("v", 2, 3, split="val")])
    dataset = ActiveSpeakerDataset(root, "train")
    geometry = dataset.geometry[0]
    assert geometry.frames.tolist() == [2, 3, 4, 5, 6]  # frame 4's zero-width box is replaced by interpolation
    assert dataset[0]["faces"].shape == (5, 112, 112)
    assert dataset[0]["labels"].shape == (5,) and dataset[0]["mfcc"].shape == (20, 13)


def test_max_frames_cuts_lines(layout):
    dataset = ActiveSpeakerDataset(layout, "train", max_frames=4)
    assert dataset.num_frames == [4, 4, 4]
    sample = dataset[0]
    assert sample["faces"].shape == (4, 112, 112) and sample["mfcc"].shape == (16, 13)
    assert sample["labels"].shape == (4,)
    full = ActiveSpeakerDataset(layout, "train")[0]
    assert torch.equal(sample["faces"], full["faces"][:4]) and torch.equal(sample["mfcc"], full["mfcc"][:16])
    with pytest.raises(ValueError, match="max_frames"):
        ActiveSpeakerDataset(layout, "train", max_frames=0)


def test_max_frames_training_windows_start_anywhere_in_the_line(layout):
    cut = ActiveSpeakerDataset(layout, "train", train=True, max_frames=4, visual_aug=False, audio_mix=False)
    full = ActiveSpeakerDataset(layout, "train")[0]
    computed = len(talknet_mfcc(cut._audio(cut.lines[0])))  # rows past these are wrap padding
    offsets = set()
    for seed in range(12):
        torch.manual_seed(seed)
        sample = cut[0]
        offset = sample["start_frame"] - full["start_frame"]
        assert 0 <= offset <= 12 - 4
        assert torch.equal(sample["faces"], full["faces"][offset:offset + 4])
        rows = min(16, computed - 4 * offset)
        assert torch.equal(sample["mfcc"][:rows], full["mfcc"][4 * offset:4 * offset + rows])
        assert torch.equal(sample["labels"], full["labels"][offset:offset + 4])
        offsets.add(offset)
    assert len(offsets) > 3


def test_training_augmentation_is_seeded_and_validation_is_not_augmented(layout):
    dataset = ActiveSpeakerDataset(layout, "train", train=True)
    torch.manual_seed(3)
    first = dataset.__getitems__([0, 1, 2])
    torch.manual_seed(3)
    again = dataset.__getitems__([0, 1, 2])
    for a, b in zip(first, again):
        assert torch.equal(a["faces"], b["faces"]) and torch.equal(a["mfcc"], b["mfcc"])
    plain = ActiveSpeakerDataset(layout, "train")
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        augmented = dataset.__getitems__([0, 1, 2])
        for index, sample in enumerate(augmented):
            reference = plain[index]
            changed += int(not torch.equal(sample["faces"], reference["faces"]))
            changed += int(not torch.equal(sample["mfcc"], reference["mfcc"]))
            assert torch.equal(sample["labels"], reference["labels"])
    assert changed > 0
    assert torch.equal(plain[1]["faces"], plain[1]["faces"])


# ------------------------------------------------------------------------------------------
# Robustness
# ------------------------------------------------------------------------------------------


def test_missing_and_corrupt_images_are_skipped_and_counted(layout):
    (layout / "video_imgs" / CLIP / "img_00005.jpg").unlink()
    (layout / "video_imgs" / CLIP / "img_00007.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    dataset = ActiveSpeakerDataset(layout, "val")
    sample = dataset[0]
    assert sample["faces"].shape == (8, 112, 112)  # frames 4..13 minus frames 5 and 7
    assert sample["mfcc"].shape == (32, 13) and sample["labels"].shape == (8,)
    assert dataset.warnings["missing frame image (frame skipped)"] == 1
    assert dataset.warnings["corrupt frame image (frame skipped)"] == 1


def test_chunk_without_boxes_is_skipped_with_a_counted_warning(tmp_path):
    lines = [_line("ok", 1, 6), _line("nobox", 1, 6, boxes=[_box(f, width=0.0) for f in range(1, 7)]),
             _line("elsewhere", 1, 6, boxes=[_box(20), _box(21)]), _line("v", 1, 4, split="val")]
    root = _write_layout(tmp_path / "asd", lines)
    dataset = ActiveSpeakerDataset(root, "train")
    assert [line.chunk_id.split(":")[1] for line in dataset.lines] == ["ok"]
    assert dataset.warnings["ASD chunk without a valid box in its frame range (skipped)"] == 2


def test_empty_wav_window_gives_zeros_with_a_counted_warning(tmp_path):
    root = _write_layout(tmp_path / "asd", [_line("late", 20, 6), _line("v", 1, 4, split="val")], wav_frames=10)
    dataset = ActiveSpeakerDataset(root, "train")
    sample = dataset[0]
    assert sample["mfcc"].shape == (24, 13) and torch.isfinite(sample["mfcc"]).all()
    silence = fit_mfcc_rows(talknet_mfcc(np.zeros(3200)), 24).astype(np.float32)
    np.testing.assert_allclose(sample["mfcc"].numpy(), silence)
    assert dataset.warnings["empty wav window (zeros used)"] == 1


def test_a_track_without_readable_faces_is_dropped_from_its_batch(layout):
    for frame in range(2, 7):  # all frames of t3 (2..6)
        (layout / "video_imgs" / CLIP / f"img_{frame:05d}.jpg").unlink()
    dataset = ActiveSpeakerDataset(layout, "train")
    samples = dataset.__getitems__([2, 1])
    assert samples[0]["faces"].shape == (0, 112, 112)
    assert dataset.warnings["ASD chunk without a readable face (dropped from its batch)"] == 1
    batch = collate_active_speaker(samples)
    assert batch["num_dropped"] == 1 and batch["track_id"] == [f"{CLIP}:t2:0"]
    assert batch["faces"].shape == (1, 4, 112, 112)  # t2 (frames 3..10) lost frames 3..6
    empty = collate_active_speaker(samples[:1])
    assert empty["faces"].shape[0] == 0 and empty["num_dropped"] == 1


def test_missing_files_are_clear_errors(layout):
    (layout / "ego4d" / "bbox" / f"{CLIP}:t2:0.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"t2:0\.json"):
        ActiveSpeakerDataset(layout, "train")
    (layout / "ego4d" / "bbox" / f"{CLIP}:t2:0.json").write_text("[{\"frame\": \"three\"}]")
    with pytest.raises(ValueError, match="'frame'"):
        ActiveSpeakerDataset(layout, "train")
    (layout / "wave" / f"{CLIP}.wav").unlink()
    with pytest.raises(FileNotFoundError, match=f"{CLIP}.wav"):
        ActiveSpeakerDataset(layout, "val")[0]


# ------------------------------------------------------------------------------------------
# Dynamic batches
# ------------------------------------------------------------------------------------------


class _Lines(torch.utils.data.Dataset):
    """Stand-in dataset exposing only what the batch sampler reads."""

    def __init__(self, num_frames, start_frames):
        self.num_frames, self.start_frames = num_frames, start_frames

    def __len__(self):
        return len(self.num_frames)

    def __getitem__(self, index):
        return index


LENGTHS = [5, 12, 3, 12, 7, 1, 9, 300, 2]
STARTS = [10, 4, 7, 9, 1, 3, 3, 0, 8]


def test_batches_follow_the_frame_budget():
    lines = _Lines(LENGTHS, STARTS)
    sampler = DynamicBatchSampler(SequentialSampler(lines), 24, shuffle=False)
    # sorted by (n, start) descending: 300, 12@9, 12@4, 9, 7, 5, 3, 2, 1
    assert sampler.batches == [[7], [3, 1], [6, 4], [0, 2, 8, 5]]
    assert list(sampler) == sampler.batches and len(sampler) == 4
    assert sorted(i for batch in sampler for i in batch) == list(range(len(LENGTHS)))
    for batch in sampler.batches:
        assert len(batch) == max(24 // LENGTHS[batch[0]], 1)
    assert DynamicBatchSampler(SequentialSampler(lines), 1800, shuffle=False).batches == [[7, 3, 1, 6, 4, 0],
                                                                                      [2, 8, 5]]
    with pytest.raises(ValueError, match="frame budget"):
        DynamicBatchSampler(SequentialSampler(lines), 0)


def test_shuffling_is_deterministic_per_epoch():
    lines = _Lines(list(range(1, 41)), [0] * 40)
    sampler = DynamicBatchSampler(SequentialSampler(lines), 30, seed=7)
    first, again = list(sampler), list(sampler)
    assert first == again
    assert sorted(map(tuple, first)) == sorted(map(tuple, sampler.batches))
    sampler.set_epoch(1)
    assert list(sampler) != first
    other = DynamicBatchSampler(SequentialSampler(lines), 30, seed=7)
    other.set_epoch(1)
    assert list(other) == list(sampler)


def test_distributed_shards_are_equal_and_cover_every_batch():
    lines = _Lines(LENGTHS, STARTS)
    shards = [list(DynamicBatchSampler(DistributedSampler(lines, num_replicas=3, rank=rank, shuffle=False, seed=5), 24))
              for rank in range(3)]
    assert [len(shard) for shard in shards] == [2, 2, 2]  # 4 batches padded to 6
    seen = {tuple(batch) for shard in shards for batch in shard}
    assert seen == {tuple(batch) for batch in DynamicBatchSampler(SequentialSampler(lines), 24).batches}


def test_lightning_can_rebuild_the_sampler_for_ddp():
    from pytorch_lightning.utilities.data import _update_dataloader

    lines = _Lines(LENGTHS, STARTS)
    loader = DataLoader(lines, batch_sampler=DynamicBatchSampler(SequentialSampler(lines), 24, seed=5))
    rebuilt = _update_dataloader(loader, DistributedSampler(lines, num_replicas=2, rank=1, shuffle=True, seed=5))
    sampler = rebuilt.batch_sampler
    assert isinstance(sampler, DynamicBatchSampler)
    assert (sampler.num_replicas, sampler.rank, sampler.frame_budget, sampler.seed) == (2, 1, 24, 5)
    assert sampler.batches == loader.batch_sampler.batches and len(sampler) == 2


def test_collate_truncates_to_the_shortest_track(layout):
    dataset = ActiveSpeakerDataset(layout, "train")
    sampler = DynamicBatchSampler(SequentialSampler(dataset), 24, shuffle=False)
    assert sampler.batches == [[0, 1], [2]]  # 12 frames -> 2 lines; then the 5-frame line
    batches = list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_active_speaker))
    first = batches[0]
    assert first["faces"].shape == (2, 8, 112, 112) and first["mfcc"].shape == (2, 32, 13)
    assert first["labels"].shape == (2, 8) and first["index"].tolist() == [0, 1]
    assert first["start_frame"].tolist() == [1, 3] and first["num_dropped"] == 0
    alone = dataset[0]
    assert torch.equal(first["faces"][0], alone["faces"][:8]) and torch.equal(first["mfcc"][0], alone["mfcc"][:32])
    assert batches[1]["faces"].shape == (1, 5, 112, 112)


# ------------------------------------------------------------------------------------------
# The tiny twin
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("asd",))[1]


def test_twin_samples(twin):
    root = twin / "asd"
    for split in ("train", "val"):
        dataset = ActiveSpeakerDataset(root, split, train=split == "train", max_frames=6)
        lines = read_asd_csv(root / "ego4d" / "csv" / f"active_speaker_{split}.csv")
        assert len(dataset) == len(lines) > 0 and not dataset.warnings
        sample = dataset[0]
        assert sample["faces"].shape == (6, 112, 112) and sample["mfcc"].shape == (24, 13)
        offset = sample["start_frame"] - dataset.lines[0].start_frame
        assert sample["labels"].tolist() == list(dataset.lines[0].labels[offset:offset + 6])
        assert 0 <= float(sample["faces"].min()) and float(sample["faces"].max()) <= 255
    full = ActiveSpeakerDataset(root, "val")
    speaking = [label for line in full.lines for label in line.labels]
    assert 0 < sum(speaking) < len(speaking)  # both classes occur
