"""egot2.media: round trips, window reads, determinism and the errors users see."""
import hashlib

import numpy as np
import pytest

from egot2 import media


def _ramp_video(num_frames=45, height=48, width=64):
    return np.stack([np.full((height, width, 3), 4 * i, np.uint8) for i in range(num_frames)])


def test_video_round_trip_window_and_info(tmp_path):
    frames = _ramp_video()
    audio = (0.3 * np.sin(np.arange(24000) / 8.0)).astype(np.float32)
    path = tmp_path / "clip.mp4"
    media.write_video(path, frames, fps=30, audio=audio, gop=10)
    info = media.video_info(path)
    assert info["num_frames"] == 45 and info["fps"] == 30 and info["has_audio"]
    assert (info["width"], info["height"]) == (64, 48)
    window = media.read_video_frames(path, 20, 30)
    assert window.shape == (10, 48, 64, 3)
    # Brightness ramps 4 levels a frame: the decoded window must be the requested frames, not a neighbour.
    np.testing.assert_allclose(window[:, 0, 0, 0].astype(float), 4 * np.arange(20, 30), atol=1.5)


def test_writes_are_deterministic(tmp_path):
    frames = _ramp_video(20)
    audio = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    digests = set()
    for name in ("a.mp4", "b.mp4"):
        media.write_video(tmp_path / name, frames, audio=audio)
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_audio_extraction_matches_source(tmp_path):
    audio = (0.25 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    media.write_video(tmp_path / "v.mp4", _ramp_video(60), audio=audio)
    media.extract_audio(tmp_path / "v.mp4", tmp_path / "v.wav")
    samples, rate = media.read_wav(tmp_path / "v.wav")
    assert rate == 16000 and len(samples) >= 32000
    # AAC is lossy and pads; the middle of the signal must survive nearly unchanged.
    assert np.abs(samples[4000:28000] - audio[4000:28000]).mean() < 0.01


def test_image_and_wav_round_trip(tmp_path):
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0] = 200
    media.write_image(tmp_path / "f.jpg", image)
    back = media.read_image(tmp_path / "f.jpg")
    assert back.shape == (10, 12, 3) and abs(int(back[5, 5, 0]) - 200) < 4 and back[5, 5, 2] < 10
    media.write_wav(tmp_path / "a.wav", np.array([0.0, 0.5, -0.5], np.float32))
    samples, _ = media.read_wav(tmp_path / "a.wav")
    np.testing.assert_allclose(samples, [0.0, 0.5, -0.5], atol=1e-4)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(media.MediaError, match="missing.mp4"):
        media.read_video_frames(tmp_path / "missing.mp4")
    media.write_video(tmp_path / "short.mp4", _ramp_video(10))
    with pytest.raises(media.MediaError, match="only 10 frames"):
        media.read_video_frames(tmp_path / "short.mp4", 5, 20)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(media.MediaError, match="bad.jpg"):
        media.read_image(tmp_path / "bad.jpg")
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    with pytest.raises(media.MediaError, match="bad.mp4"):
        media.video_info(tmp_path / "bad.mp4")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        media.write_video(tmp_path / "odd.mp4", np.zeros((3, 5, 5, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_streaming_write_accepts_a_generator(tmp_path):
    frames = (np.full((16, 24, 3), 8 * i, np.uint8) for i in range(12))
    media.write_video(tmp_path / "gen.mp4", frames)
    decoded = media.read_video_frames(tmp_path / "gen.mp4")
    assert decoded.shape == (12, 16, 24, 3)
    np.testing.assert_allclose(decoded[:, 0, 0, 0].astype(float), 8 * np.arange(12), atol=2)
    with pytest.raises(ValueError, match="frame size changed"):
        media.write_video(tmp_path / "mixed.mp4", [np.zeros((16, 24, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)])
    assert not (tmp_path / "mixed.mp4").exists()
