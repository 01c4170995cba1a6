"""LAM/TTM stage-I networks: official key layout, shapes, readouts, audio front end numerics, init."""
import math

import librosa
import numpy as np
import pytest
import torch

from HHI.models import (
    LAMBaselineLSTM,
    ResNetSE,
    TTMBaselineLSTM,
    build_lam_model,
    build_ttm_model,
    load_social_checkpoint,
)
from HHI.models.resnetse import MelSpectrogram, PreEmphasis, mel_filterbank
from tests.manifests import manifest_keys, random_state_dict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lam_model():
    torch.manual_seed(0)
    return LAMBaselineLSTM().eval()


@pytest.fixture(scope="module")
def ttm_model():
    torch.manual_seed(0)
    return TTMBaselineLSTM().eval()


def _video(batch, frames, size=64, seed=0):
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _audio(batch, samples, seed=1):
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("builder, manifest", [(build_lam_model, "ts_lam"), (build_ttm_model, "ts_ttm")])
def test_state_dict_matches_manifest_names_order_shapes(builder, manifest):
    model = builder()
    ours = [(key, tuple(value.shape), str(value.dtype).replace("torch.", ""))
            for key, value in model.state_dict().items()]
    assert ours == manifest_keys(manifest)


@pytest.mark.parametrize("builder, manifest", [(build_lam_model, "ts_lam"), (build_ttm_model, "ts_ttm")])
def test_manifest_state_dict_loads_strictly(builder, manifest):
    model = builder()
    official = random_state_dict(manifest, seed=3)
    model.load_state_dict(official, strict=True)
    loaded = model.state_dict()
    for key, value in official.items():
        assert torch.equal(loaded[key], value), key


def test_ttm_fixed_buffers_have_official_names_and_values(ttm_model):
    buffers = dict(ttm_model.named_buffers())
    torch.testing.assert_close(buffers["audio_encoder.torchfb.0.flipped_filter"], torch.tensor([[[-0.97, 1.0]]]))
    torch.testing.assert_close(buffers["audio_encoder.torchfb.1.spectrogram.window"],
                               torch.hamming_window(400, periodic=True))
    assert buffers["audio_encoder.torchfb.1.mel_scale.fb"].shape == (257, 64)


def test_lam_forward_and_features_shapes(lam_model):
    video = _video(2, 7)
    with torch.no_grad():
        logits = lam_model(video)
        features = lam_model.forward_features(video)
    assert logits.shape == (2, 2)
    assert features.shape == (2, 7, 256)
    assert lam_model.feature_dim == 256
    assert torch.isfinite(logits).all()


def test_ttm_forward_and_features_shapes(ttm_model):
    video, audio = _video(2, 3), _audio(2, 8000)  # 0.5 s of 16 kHz audio
    with torch.no_grad():
        logits = ttm_model(video, audio)
        features = ttm_model.forward_features(video)
    assert logits.shape == (2, 2)
    assert features.shape == (2, 3, 256)
    assert ttm_model.feature_dim == 256
    assert torch.isfinite(logits).all()


def test_features_are_the_per_frame_encoder_output(ttm_model):
    video = _video(2, 3, size=32)
    with torch.no_grad():
        batched = ttm_model.forward_features(video)
        one_by_one = torch.stack([
            torch.stack([ttm_model.video_encoder(video[b, t:t + 1])[0] for t in range(3)]) for b in range(2)])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_lam_reads_out_the_centre_step(lam_model):
    video = _video(2, 7, size=32)
    with torch.no_grad():
        sequence, _ = lam_model.lstm(lam_model.base_model.encode_clip(video))
        expected = lam_model.last_layer2(lam_model.last_layer1(sequence[:, 3]))
        torch.testing.assert_close(lam_model(video), expected)
        assert not torch.allclose(lam_model(video), lam_model.last_layer2(lam_model.last_layer1(sequence[:, -1])))


def test_ttm_reads_out_the_last_step_then_audio(ttm_model):
    video, audio = _video(2, 4, size=32), _audio(2, 4000)
    with torch.no_grad():
        sequence, _ = ttm_model.lstm(ttm_model.video_encoder.encode_clip(video))
        summary = torch.cat((sequence[:, -1], ttm_model.audio_encoder(audio)), dim=1)
        expected = ttm_model.last_layer2(ttm_model.last_layer1(summary))
        torch.testing.assert_close(ttm_model(video, audio), expected)


def test_audio_encoder_shapes_for_a_full_chunk():
    encoder = ResNetSE().eval()
    audio = _audio(1, 80_000)
    with torch.no_grad():
        log_mel = encoder.log_mel(audio)
        assert log_mel.shape == (1, 64, 501)
        features = encoder.bn1(encoder.relu(encoder.conv1(log_mel.unsqueeze(1))))
        shapes = []
        for layer in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4):
            features = layer(features)
            shapes.append(tuple(features.shape))
        assert shapes == [(1, 32, 64, 501), (1, 64, 32, 251), (1, 128, 16, 126), (1, 256, 8, 63)]
        assert encoder.attention[0].in_channels == 2048 and encoder.fc.in_features == 4096
        assert encoder(audio).shape == (1, 512)


def test_mel_filterbank_equals_librosa_htk_without_norm():
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, htk=True, norm=None)
    ours = mel_filterbank(257, 64, 16000)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), reference.T, rtol=1e-6, atol=1e-7)


def test_pre_emphasis_matches_difference_equation():
    waveform = torch.randn(2, 50, dtype=torch.float32)
    x = waveform.double().numpy()
    expected = x - 0.97 * np.concatenate([x[:, 1:2], x[:, :-1]], axis=1)  # x[-1] reflected to x[1]
    np.testing.assert_allclose(PreEmphasis(0.97)(waveform).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mel_spectrogram_matches_direct_numpy_stft():
    n_fft, win, hop = 512, 400, 160
    waveform = torch.randn(1, 3000, generator=torch.Generator().manual_seed(5))
    signal = waveform[0].double().numpy()
    padded = np.pad(signal, n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    offset = (n_fft - win) // 2  # torch.stft centres a shorter window inside the FFT frame
    window[offset:offset + win] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hamming
    num_frames = 1 + len(signal) // hop
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(num_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, 257)
    fb = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=64, htk=True, norm=None).astype(np.float64)
    expected_mel = (power @ fb.T).T  # (64, frames)

    module = MelSpectrogram(sample_rate=16000, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=64)
    spectrum = module.spectrogram(waveform)[0].double().numpy()
    assert spectrum.shape == (257, num_frames)
    np.testing.assert_allclose(spectrum, power.T, rtol=1e-4, atol=1e-5 * power.max())
    np.testing.assert_allclose(module(waveform)[0].double().numpy(), expected_mel, rtol=1e-4,
                               atol=1e-5 * expected_mel.max())


def test_audio_front_end_builds_no_graph():
    encoder = ResNetSE()
    audio = _audio(1, 2000).requires_grad_(True)
    assert not encoder.log_mel(audio).requires_grad
    encoder(audio).sum().backward()
    assert audio.grad is None and encoder.conv1.weight.grad is not None


def test_init_kaiming_fan_out_and_unit_batchnorm(lam_model, ttm_model):
    torch.manual_seed(0)
    for conv, fan_out in [(lam_model.base_model.layer4[1].conv2, 512 * 9),
                          (ttm_model.audio_encoder.layer4[1].conv2, 256 * 9)]:
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.03)
    for model in (LAMBaselineLSTM(), TTMBaselineLSTM()):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("builder, manifest", [(build_lam_model, "ts_lam"), (build_ttm_model, "ts_ttm")])
def test_social_checkpoint_file_loads_with_and_without_ddp_prefix(tmp_path, builder, manifest, prefix):
    official = random_state_dict(manifest, seed=7)
    path = tmp_path / f"{manifest}.pth"
    torch.save({"epoch": 12, "state_dict": {prefix + key: value for key, value in official.items()}, "mAP": 0.78},
               path)
    model = builder()
    info = load_social_checkpoint(model, path)
    assert info == {"epoch": 12, "mAP": 0.78}
    for key, value in model.state_dict().items():
        assert torch.equal(value, official[key]), key


def test_social_checkpoint_with_missing_key_is_rejected(tmp_path):
    official = random_state_dict("ts_lam", seed=7)
    del official["last_layer2.bias"]
    path = tmp_path / "ts_lam.pth"
    torch.save({"epoch": 1, "state_dict": official, "mAP": 0.5}, path)
    with pytest.raises(ValueError, match=r"missing keys(.|\n)*last_layer2.bias"):
        load_social_checkpoint(build_lam_model(), path)
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        load_social_checkpoint(build_lam_model(), tmp_path / "no_such.pth")


def test_bad_inputs_raise_clear_errors(lam_model, ttm_model):
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        lam_model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="audio too short"):
        ttm_model(_video(1, 2, size=32), torch.zeros(1, 100))
    with pytest.raises(ValueError, match="video batch"):
        ttm_model(_video(2, 2, size=32), torch.zeros(3, 4000))


def test_models_fit_the_frozen_backbone_interface():
    from egot2.backbone import FrozenBackbone

    model = TTMBaselineLSTM()
    backbone = FrozenBackbone(model).train()
    running_mean = model.video_encoder.bn1.running_mean.clone()
    features = backbone(_video(2, 3, size=32))
    assert features.shape == (2, 3, backbone.feature_dim) == (2, 3, 256)
    assert torch.equal(model.video_encoder.bn1.running_mean, running_mean)
