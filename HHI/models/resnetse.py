"""ResNetSE: the speaker-verification style audio encoder of the TTM stage-I model.

Everything torchaudio would provide is implemented here with ``torch.stft`` so that torchaudio is
not needed, with module and buffer names that reproduce the official checkpoint keys
(``torchfb.0.flipped_filter``, ``torchfb.1.spectrogram.window``, ``torchfb.1.mel_scale.fb``).

Data flow (spec hhi.md §3.3; shapes for A = 80 000 samples, a 151-frame chunk at 16 kHz)::

    waveform (B, A)
      -> pre-emphasis 0.97 (B, A) -> mel power spectrogram (B, 64, 501) -> +1e-6, log
      -> InstanceNorm1d over time, per mel bin (B, 1, 64, 501)        [front end: no gradient]
      -> conv1 3x3 + ReLU + BN (ReLU before BN)  (B, 32, 64, 501)
      -> layer1 (B, 32, 64, 501) -> layer2 (B, 64, 32, 251) -> layer3 (B, 128, 16, 126)
      -> layer4 (B, 256, 8, 63) -> flatten channel x frequency (B, 2048, 63)
      -> attentive statistics pooling: weighted mean and std over time (B, 4096)
      -> fc (B, 512)
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from HHI.models.resnet import init_conv_bn_

__all__ = [
    "PreEmphasis",
    "Spectrogram",
    "MelScale",
    "MelSpectrogram",
    "mel_filterbank",
    "SqueezeExcitation",
    "SEBasicBlock",
    "ResNetSE",
]


def _hz_to_mel_htk(frequency_hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + frequency_hz / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: Optional[float] = None) -> torch.Tensor:
    """Triangular HTK-scale mel filterbank without area normalisation (torchaudio's default).

    The filters are computed in float64 and returned as float32; they equal
    ``librosa.filters.mel(sr, n_fft, n_mels, htk=True, norm=None).T``.

    Args:
        n_freqs: number of STFT bins, ``n_fft // 2 + 1``.
        n_mels: number of mel filters.
        sample_rate: sampling rate in Hz.
        f_min: lowest filter edge in Hz.
        f_max: highest filter edge in Hz; ``None`` means ``sample_rate / 2``.

    Returns:
        (n_freqs, n_mels) float32 filterbank; ``power_spectrum.T @ fb`` gives mel energies.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    bin_frequencies = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    mel_edges = np.linspace(_hz_to_mel_htk(np.float64(f_min)), _hz_to_mel_htk(np.float64(f_max)), n_mels + 2)
    edge_frequencies = _mel_to_hz_htk(mel_edges)
    edge_widths = np.diff(edge_frequencies)
    # distance of every filter edge above every STFT bin: (n_freqs, n_mels + 2)
    distance = edge_frequencies[None, :] - bin_frequencies[:, None]
    rising = -distance[:, :-2] / edge_widths[:-1]
    falling = distance[:, 2:] / edge_widths[1:]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return torch.from_numpy(weights.astype(np.float32))


class PreEmphasis(nn.Module):
    """First-order high-pass ``y[t] = x[t] - coefficient * x[t - 1]``.

    The first sample uses a reflected neighbour (``x[-1] := x[1]``) so the output keeps the input
    length. The filter is stored flipped in the buffer ``flipped_filter`` (1, 1, 2) because
    ``conv1d`` computes a cross-correlation.

    Args:
        coefficient: pre-emphasis coefficient (0.97).
    """

    def __init__(self, coefficient: float = 0.97) -> None:
        super().__init__()
        self.coefficient = coefficient
        self.register_buffer("flipped_filter", torch.tensor([[[-coefficient, 1.0]]], dtype=torch.float32))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Apply the filter.

        Args:
            waveform: (B, A) float.

        Returns:
            (B, A) filtered waveform.
        """
        if waveform.dim() != 2:
            raise ValueError(f"PreEmphasis expects a waveform of shape (B, A), got {tuple(waveform.shape)}")
        padded = F.pad(waveform.unsqueeze(1), (1, 0), mode="reflect")
        return F.conv1d(padded, self.flipped_filter).squeeze(1)


class Spectrogram(nn.Module):
    """Power spectrogram with a centred, reflect-padded STFT (torchaudio ``Spectrogram`` defaults).

    Args:
        n_fft: FFT size; the output has ``n_fft // 2 + 1`` frequency bins.
        win_length: window length; the window is zero-padded to ``n_fft`` on both sides.
        hop_length: hop between frames; the output has ``1 + A // hop_length`` frames.
        power: exponent applied to the magnitude (2 gives power).

    The Hamming window (periodic, as ``torch.hamming_window``) is the buffer ``window``.
    """

    def __init__(self, n_fft: int = 512, win_length: int = 400, hop_length: int = 160, power: float = 2.0) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.power = power
        self.register_buffer("window", torch.hamming_window(win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute the spectrogram.

        Args:
            waveform: (B, A) float with A > n_fft // 2 (reflect padding needs that many samples).

        Returns:
            (B, n_fft // 2 + 1, 1 + A // hop_length) power spectrogram.
        """
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"audio too short for the spectrogram: {waveform.shape[-1]} samples, "
                f"need more than n_fft // 2 = {self.n_fft // 2}")
        stft = torch.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, pad_mode="reflect", normalized=False,
                          onesided=True, return_complex=True)
        return stft.abs().pow(self.power)


class MelScale(nn.Module):
    """Project a linear-frequency spectrogram onto mel bands with the buffer ``fb`` (n_freqs, n_mels).

    Args:
        n_mels: number of mel bands.
        sample_rate: sampling rate in Hz.
        n_freqs: STFT bins of the input, ``n_fft // 2 + 1``.
    """

    def __init__(self, n_mels: int = 64, sample_rate: int = 16000, n_freqs: int = 257) -> None:
        super().__init__()
        self.register_buffer("fb", mel_filterbank(n_freqs, n_mels, sample_rate))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Apply the filterbank.

        Args:
            spectrogram: (B, n_freqs, frames).

        Returns:
            (B, n_mels, frames).
        """
        return torch.matmul(spectrogram.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    """Mel power spectrogram: ``Spectrogram`` then ``MelScale`` (torchaudio ``MelSpectrogram`` layout).

    Args:
        sample_rate: sampling rate in Hz.
        n_fft: FFT size.
        win_length: Hamming window length.
        hop_length: hop between frames.
        n_mels: number of mel bands.
        power: magnitude exponent.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 64, power: float = 2.0) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(n_fft=n_fft, win_length=win_length, hop_length=hop_length, power=power)
        self.mel_scale = MelScale(n_mels=n_mels, sample_rate=sample_rate, n_freqs=n_fft // 2 + 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute mel energies.

        Args:
            waveform: (B, A) float.

        Returns:
            (B, n_mels, 1 + A // hop_length).
        """
        return self.mel_scale(self.spectrogram(waveform))


class SqueezeExcitation(nn.Module):
    """Channel gating: global average, ``fc`` = Linear C->C/r, ReLU, Linear C/r->C, sigmoid.

    Args:
        channels: channels C of the feature map.
        reduction: bottleneck ratio r.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rescale channels.

        Args:
            features: (B, C, F, T).

        Returns:
            (B, C, F, T) features times their per-channel gate.
        """
        gate = self.fc(features.mean(dim=(2, 3)))
        return features * gate[:, :, None, None]


class SEBasicBlock(nn.Module):
    """Residual block of ResNetSE: conv3x3 -> ReLU -> BN -> conv3x3 -> BN -> SE, plus residual, ReLU.

    The first convolution is followed by ReLU *before* BatchNorm, as in the official audio encoder;
    the order matters for loading its weights.

    Args:
        in_channels: channels of the block input.
        channels: channels of the block output.
        stride: stride of the first convolution (applies to frequency and time).
        downsample: projection for the residual when the shape changes, else ``None``.
        se_reduction: squeeze-excitation bottleneck ratio.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 se_reduction: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcitation(channels, se_reduction)
        self.downsample = downsample

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            features: (B, in_channels, F, T).

        Returns:
            (B, channels, ceil(F / stride), ceil(T / stride)).
        """
        residual = features if self.downsample is None else self.downsample(features)
        out = self.bn1(self.relu(self.conv1(features)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + residual)


class ResNetSE(nn.Module):
    """Audio encoder of the TTM model: log-mel front end, SE-ResNet, attentive statistics pooling.

    Args:
        n_mels: mel bands of the front end (64).
        stage_channels: output channels of ``layer1`` ... ``layer4``.
        blocks_per_stage: SE-BasicBlocks per stage.
        embedding_dim: output width of ``fc`` (512).
        attention_dim: bottleneck width of the temporal attention (128).
        se_reduction: squeeze-excitation ratio (8).
        sample_rate: audio sampling rate in Hz (16 000).
        n_fft: FFT size of the front end (512).
        win_length: Hamming window length (400 samples = 25 ms).
        hop_length: hop length (160 samples = 10 ms).
        preemphasis: pre-emphasis coefficient (0.97).

    Init as the official model: Kaiming-normal (fan_out) Conv2d weights, BatchNorm2d 1 / 0, defaults
    elsewhere.
    """

    def __init__(self, n_mels: int = 64, stage_channels: Sequence[int] = (32, 64, 128, 256),
                 blocks_per_stage: Sequence[int] = (2, 2, 2, 2), embedding_dim: int = 512, attention_dim: int = 128,
                 se_reduction: int = 8, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, preemphasis: float = 0.97) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4 or len(stage_channels) != 4:
            raise ValueError(
                f"ResNetSE needs 4 stages, got blocks_per_stage={tuple(blocks_per_stage)} "
                f"and stage_channels={tuple(stage_channels)}")
        self.n_mels = n_mels
        self.embedding_dim = embedding_dim
        # registration order reproduces the official state-dict key order
        self.conv1 = nn.Conv2d(1, stage_channels[0], kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        in_channels = stage_channels[0]
        freq_bins = n_mels
        for stage_index, (num_blocks, channels) in enumerate(zip(blocks_per_stage, stage_channels)):
            stride = 1 if stage_index == 0 else 2
            self.add_module(f"layer{stage_index + 1}",
                            self._make_stage(in_channels, channels, num_blocks, stride, se_reduction))
            in_channels = channels
            freq_bins = math.ceil(freq_bins / stride)
        self.instancenorm = nn.InstanceNorm1d(n_mels)
        self.torchfb = nn.Sequential(
            PreEmphasis(preemphasis),
            MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                           n_mels=n_mels),
        )
        pooled_channels = in_channels * freq_bins
        self.attention = nn.Sequential(
            nn.Conv1d(pooled_channels, attention_dim, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(attention_dim),
            nn.Conv1d(attention_dim, pooled_channels, kernel_size=1),
            nn.Softmax(dim=2),
        )
        self.fc = nn.Linear(2 * pooled_channels, embedding_dim)
        init_conv_bn_(self)

    @staticmethod
    def _make_stage(in_channels: int, channels: int, num_blocks: int, stride: int, se_reduction: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        blocks = [SEBasicBlock(in_channels, channels, stride, downsample, se_reduction)]
        blocks += [SEBasicBlock(channels, channels, se_reduction=se_reduction) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """The fixed front end: pre-emphasis, mel power spectrogram, log, instance norm (no gradient).

        Args:
            waveform: (B, A) float, A > n_fft // 2.

        Returns:
            (B, n_mels, 1 + A // hop_length) normalised log-mel energies.
        """
        if waveform.dim() != 2:
            raise ValueError(f"ResNetSE expects audio of shape (B, A), got {tuple(waveform.shape)}")
        with torch.no_grad():
            mel_energy = self.torchfb(waveform) + 1e-6
            return self.instancenorm(mel_energy.log())

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Embed a batch of waveforms.

        Args:
            waveform: (B, A) float mono audio at ``sample_rate``.

        Returns:
            (B, embedding_dim) utterance embedding.
        """
        features = self.log_mel(waveform).unsqueeze(1)
        features = self.bn1(self.relu(self.conv1(features)))
        features = self.layer4(self.layer3(self.layer2(self.layer1(features))))
        # (B, C, F, T) -> (B, C * F, T): every channel-frequency pair is one pooled feature
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        weights = self.attention(features)
        mean = torch.sum(features * weights, dim=2)
        variance = torch.sum(features.pow(2) * weights, dim=2) - mean.pow(2)
        std = torch.sqrt(variance.clamp(min=1e-5))
        return self.fc(torch.cat((mean, std), dim=1))
