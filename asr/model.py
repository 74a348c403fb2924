"""Whisper's encoder-decoder transformer, with variable-length audio and an optional CTC head.

The parameter names are Whisper's, so an OpenAI checkpoint's ``model_state_dict`` loads as it is.
What differs from Whisper's own module:

- the encoder takes any number of frames up to ``audio_stride * n_audio_ctx`` plus each utterance's true
  length, and masks the padding, so a batch of 3 s clips costs 3 s of encoder work rather than 30 s;
- ``audio_stride`` 4 strides the first convolution as well: 25 encoder positions per second instead
  of Whisper's 50, a quarter of the self-attention and half of the rest of the encoder's work;
- attention runs through ``F.scaled_dot_product_attention`` (flash kernels on a GPU);
- the key/value cache for incremental decoding is an explicit object rather than forward hooks;
- an optional linear CTC head on the encoder output, for joint CTC/attention training.

This module knows no I/O and no decoding strategy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class ModelDims:
    """The network's shape; Whisper's ``ModelDimensions`` fields plus the CTC head switch."""

    n_mels: int
    n_audio_ctx: int  # encoder positions: 1500 = 30 s at 50 per second
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    ctc_head: bool = False  # adds a CTC projection over n_ctc_vocab + 1 classes; the blank is the last
    n_ctc_vocab: int = 0  # CTC classes before the blank: the first ids (the text pieces); 0: all n_vocab
    # A translation CTC branch on the encoder output, over the same classes, trained on the English
    # translation of the heard words (ESPnet-ST's translation CTC); see TranslationCTC.
    translation_ctc_head: bool = False
    n_translation_ctc_layer: int = 0  # self-attention blocks in the branch before its projection
    translation_ctc_detached: bool = False  # the branch's gradient stops at the encoder output
    # Mel frames (10 ms) per encoder position: 2 is Whisper's (50 per second); 4 strides the first
    # convolution too (25 per second). Timestamp tokens stay on their 20 ms grid either way.
    audio_stride: int = 2

    def __post_init__(self):
        if self.audio_stride not in AUDIO_STRIDES:
            raise ValueError(f"audio_stride is {self.audio_stride}; it must be one of {AUDIO_STRIDES}")

    @classmethod
    def from_dict(cls, dims: dict) -> "ModelDims":
        """From a checkpoint's ``dims`` (ours or OpenAI's, which lacks ``ctc_head`` and ``audio_stride``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(dims) - names
        if unknown:
            raise ValueError(f"unknown model dimensions {sorted(unknown)}; expected {sorted(names)}")
        return cls(**dims)


class Output(NamedTuple):
    logits: Tensor  # (batch, n_tokens, n_vocab), float32
    ctc_logits: Tensor | None  # (batch, n_audio_frames, ctc_blank + 1), float32; None without a CTC head
    audio_lengths: Tensor | None  # (batch,) valid encoder positions; None when nothing is padded
    translation_ctc_logits: Tensor | None = None  # like ctc_logits, from the translation CTC head


AUDIO_STRIDES = (2, 4)  # mel frames per encoder position that the convolution stem can give
FEATURE_RMS = 0.4  # RMS of Whisper's normalised log-mel features of speech: ~0.5 clean, ~0.3 in noise
TOKEN_EMBEDDING_STD = 0.02  # of a fresh token embedding (tied to the output projection: small logits)
SINUSOID_RMS = 0.5**0.5  # of sinusoids(): half its entries sines, half cosines, each of mean square 1/2


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> Tensor:
    """Whisper's sinusoidal position embedding, shape = (length, channels)."""
    assert channels % 2 == 0
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, np.newaxis] * inv_timescales[np.newaxis, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def encoder_lengths(n_frames: Tensor, audio_stride: int = 2) -> Tensor:
    """Encoder positions per utterance: the strided convolutions divide the mel frames by ``audio_stride``,
    rounding up (each stride-2 convolution rounds up, and ceil(ceil(n / 2) / 2) = ceil(n / 4))."""
    return (n_frames + audio_stride - 1) // audio_stride


class LayerNorm(nn.LayerNorm):
    """Layer norm computed in float32 whatever the activations' and weights' precision."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type(x.dtype)


@dataclass
class LayerCache:
    """One decoder layer's keys and values, each of shape (batch, n_head, n_positions, head_dim)."""

    key: Tensor | None = None
    value: Tensor | None = None
    cross_key: Tensor | None = None
    cross_value: Tensor | None = None


class KVCache:
    """Keys and values of the decoder positions seen so far, and of the audio, for incremental decoding.

    Pass the same cache to successive ``Model.decode`` calls with only the new tokens each time.
    """

    def __init__(self, n_layer: int):
        self.layers = [LayerCache() for _ in range(n_layer)]

    @property
    def offset(self) -> int:
        """How many token positions are cached."""
        key = self.layers[0].key
        return 0 if key is None else key.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (a beam search's surviving hypotheses), in that order."""
        for layer in self.layers:
            for name in ("key", "value", "cross_key", "cross_value"):
                tensor = getattr(layer, name)
                if tensor is not None:
                    setattr(layer, name, tensor.index_select(0, index.to(tensor.device)))


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, n_ctx, n_state) -> (batch, n_head, n_ctx, head_dim)"""
        batch, n_ctx, n_state = x.shape
        return x.view(batch, n_ctx, self.n_head, n_state // self.n_head).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        return self.split_heads(self.key(source)), self.split_heads(self.value(source))

    def forward(self, x: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        """
        x : shape = (batch, n_query, n_state)
        key, value : shape = (batch, n_head, n_key, head_dim)
        mask : bool, broadcastable to (batch, n_head, n_query, n_key); True where attention is allowed
        """
        query = self.split_heads(self.query(x))
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal)
        return self.out(attended.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        n_mlp = n_state * 4
        self.mlp = nn.Sequential(nn.Linear(n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor, xa: Tensor | None = None, self_mask: Tensor | None = None,
                cross_mask: Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> Tensor:
        h = self.attn_ln(x)
        key, value = self.attn.keys_values(h)
        if cache is not None:
            if cache.key is not None:
                key, value = torch.cat([cache.key, key], dim=2), torch.cat([cache.value, value], dim=2)
            cache.key, cache.value = key, value
        x = x + self.attn(h, key, value, mask=self_mask, is_causal=causal and self_mask is None)
        if self.cross_attn is not None:
            if cache is not None and cache.cross_key is not None:
                key, value = cache.cross_key, cache.cross_value
            else:
                key, value = self.cross_attn.keys_values(xa)
                if cache is not None:
                    cache.cross_key, cache.cross_value = key, value
            x = x + self.cross_attn(self.cross_attn_ln(x), key, value, mask=cross_mask)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, stride: int = 2):
        super().__init__()
        self.stride = stride  # mel frames per position: conv2 halves them, and conv1 too for 4
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, stride=stride // 2, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)
        self.checkpoint_activations = False

    def forward(self, mel: Tensor, n_frames: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """
        mel : shape = (batch, n_mels, n_frames_max), at most stride * n_audio_ctx frames; frames past an
            utterance's length must be 0 (what asr.audio's batched features give)
        n_frames : shape = (batch,), each utterance's valid frames; None when none is padded

        Returns the encoded audio, shape = (batch, ceil(n_frames_max / stride), n_state), and its boolean
        mask, shape = (batch, ceil(n_frames_max / stride)), True at valid positions (None when none is padded).
        """
        max_frames, n_ctx = mel.shape[-1], self.positional_embedding.shape[0]
        if max_frames > self.stride * n_ctx:
            raise ValueError(f"{max_frames} mel frames exceed the encoder's {self.stride * n_ctx} "
                             f"({n_ctx} positions of {self.stride} frames)")
        if n_frames is not None and bool((n_frames >= max_frames).all()):
            n_frames = None
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))  # features are float32; weights may be bf16
        mask = None
        if n_frames is not None:
            # Zero past each utterance's end, as the single utterance's zero padding would be, so the
            # strided convolution's last output is the same whatever the batch's longest clip.
            conv1_lengths = encoder_lengths(n_frames.to(mel.device), self.stride // 2)
            frame_mask = torch.arange(x.shape[-1], device=mel.device) < conv1_lengths[:, None]
            x = x * frame_mask[:, None, :].to(x.dtype)
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        if n_frames is not None:
            positions = torch.arange(x.shape[1], device=x.device)
            mask = positions < encoder_lengths(n_frames.to(x.device), self.stride)[:, None]
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        attn_mask = None if mask is None else mask[:, None, None, :]
        for block in self.blocks:
            if self.checkpoint_activations and self.training:
                x = checkpoint(block, x, None, attn_mask, use_reentrant=False)
            else:
                x = block(x, self_mask=attn_mask)
        return self.ln_post(x), mask


class TranslationCTC(nn.Module):
    """The translation CTC branch: ``n_layer`` self-attention blocks and a layer norm (none at 0), then a
    linear projection over the CTC classes, on the encoder output. Detached, its gradient stops at the
    encoder output: the encoder keeps to the heard words, and the branch learns their English on its own."""

    def __init__(self, n_state: int, n_head: int, n_layer: int, n_classes: int, detached: bool):
        super().__init__()
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln = LayerNorm(n_state) if n_layer else None
        self.proj = nn.Linear(n_state, n_classes)
        self.detached = detached

    def forward(self, xa: Tensor, audio_mask: Tensor | None = None) -> Tensor:
        x = xa.detach() if self.detached else xa
        attn_mask = None if audio_mask is None else audio_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, self_mask=attn_mask)
        if self.ln is not None:
            x = self.ln(x)
        return self.proj(x).float()


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
        )
        self.ln = LayerNorm(n_state)
        self.checkpoint_activations = False

    def forward(self, tokens: Tensor, xa: Tensor, audio_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        """
        tokens : shape = (batch, n_tokens), right-padded; with a cache, only the tokens after ``cache.offset``
        xa : shape = (batch, n_audio_positions, n_audio_state), the encoded audio
        audio_mask : bool, shape = (batch, n_audio_positions), True at valid positions

        Returns logits, shape = (batch, n_tokens, n_vocab), float32.
        """
        offset = cache.offset if cache is not None else 0
        n_tokens = tokens.shape[-1]
        if offset + n_tokens > self.positional_embedding.shape[0]:
            raise ValueError(f"{offset + n_tokens} tokens exceed the decoder's {self.positional_embedding.shape[0]} positions")
        x = self.token_embedding(tokens) + self.positional_embedding[offset: offset + n_tokens]
        x = x.to(xa.dtype)
        # New tokens see every cached position and, among themselves, only the earlier ones.
        self_mask = None
        if offset and n_tokens > 1:
            self_mask = torch.ones(n_tokens, offset + n_tokens, dtype=torch.bool, device=x.device).tril(offset)
        cross_mask = None if audio_mask is None else audio_mask[:, None, None, :]
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            causal = offset == 0
            if self.checkpoint_activations and self.training and layer_cache is None:
                x = checkpoint(block, x, xa, self_mask, cross_mask, causal, use_reentrant=False)
            else:
                x = block(x, xa, self_mask, cross_mask, causal, layer_cache)
        x = self.ln(x)
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()


class Model(nn.Module):
    """Whisper's architecture: ``Model(dims)``; parameter names match OpenAI's checkpoints."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state,
                                    dims.n_audio_head, dims.n_audio_layer, dims.audio_stride)
        self.decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state,
                                   dims.n_text_head, dims.n_text_layer)
        self.ctc = nn.Linear(dims.n_audio_state, self.ctc_blank + 1) if dims.ctc_head else None
        self.reset_parameters()
        # Made last, so that the rest starts from the same random draws with and without it
        self.ctc_translation = (
            TranslationCTC(dims.n_audio_state, dims.n_audio_head, dims.n_translation_ctc_layer, self.ctc_blank + 1,
                           dims.translation_ctc_detached) if dims.translation_ctc_head else None)

    @property
    def ctc_blank(self) -> int:
        """The CTC head's blank class, after its vocabulary (the text pieces, or the whole vocabulary).
        A head over the text pieces alone costs a fraction of one over every special and timestamp token,
        which on a small model is a quarter of the training compute."""
        return self.dims.n_ctc_vocab or self.dims.n_vocab

    def reset_parameters(self) -> None:
        """A from-scratch start: small embeddings, since the output projection is tied to the token
        embedding; decoder positions that start as sinusoids at the token embedding's scale; and a
        convolution stem whose output is as large as the positional embedding it is added to.

        The decoder's positions are learned, but a position only learns from sequences that reach it:
        from random vectors, the positions past a short clip's length start as noise. Sinusoids give
        every position an ordered place from the start. They did not cure the decoder's weakness on
        long-form windows (on the demo corpus, teacher-forced accuracy 0.88 on a window's first 20
        tokens and 0.3 to 0.45 past the 40th, with random and with sinusoidal starts alike).

        With PyTorch's default convolution init the stem's output on Whisper's log-mel features (RMS
        0.3 to 0.5) has an RMS near 0.02 against the sinusoids' 0.7, so the first layer norm sees little
        but position and the encoder takes far longer to start hearing (measured on the demo corpus:
        CTC character error still 1.0 after 620 steps, 0.65 with the stem 20 times larger).
        """
        if self.decoder.token_embedding.weight.device.type == "meta":
            return
        nn.init.normal_(self.decoder.token_embedding.weight, std=TOKEN_EMBEDDING_STD)
        with torch.no_grad():
            positions = self.decoder.positional_embedding
            positions.copy_(sinusoids(*positions.shape) * (TOKEN_EMBEDDING_STD / SINUSOID_RMS))
        for conv, input_rms in ((self.encoder.conv1, FEATURE_RMS), (self.encoder.conv2, 1.0)):
            # He init (GELU counted as ReLU), which assumes a unit-RMS input; conv1's input is the features
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            with torch.no_grad():
                conv.weight.div_(input_rms)
            nn.init.zeros_(conv.bias)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block's activations in the backward pass: less memory, about a third more compute."""
        self.encoder.checkpoint_activations = enabled
        self.decoder.checkpoint_activations = enabled

    def encode(self, mel: Tensor, n_frames: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """See ``AudioEncoder.forward``."""
        return self.encoder(mel, n_frames)

    def decode(self, tokens: Tensor, xa: Tensor, audio_mask: Tensor | None = None,
               cache: KVCache | None = None) -> Tensor:
        """See ``TextDecoder.forward``."""
        return self.decoder(tokens, xa, audio_mask, cache)

    def new_cache(self) -> KVCache:
        return KVCache(self.dims.n_text_layer)

    def ctc_logits(self, xa: Tensor) -> Tensor:
        """(batch, n_audio_positions, n_audio_state) -> (batch, n_audio_positions, ctc_blank + 1), float32"""
        if self.ctc is None:
            raise ValueError("this model has no CTC head (ModelDims.ctc_head is false)")
        return self.ctc(xa).float()

    def translation_ctc_logits(self, xa: Tensor, audio_mask: Tensor | None = None) -> Tensor:
        """Like ``ctc_logits``, over the English translation's text pieces; ``audio_mask`` as the encoder
        gives it (True at valid positions), for the branch's self-attention."""
        if self.ctc_translation is None:
            raise ValueError("this model has no translation CTC head (ModelDims.translation_ctc_head is false)")
        return self.ctc_translation(xa, audio_mask)

    def forward(self, mel: Tensor, tokens: Tensor, n_frames: Tensor | None = None) -> Output:
        """
        mel : shape = (batch, n_mels, n_frames_max)
        tokens : shape = (batch, n_tokens)
        n_frames : shape = (batch,), valid mel frames per utterance; None when none is padded
        """
        xa, audio_mask = self.encoder(mel, n_frames)
        logits = self.decoder(tokens, xa, audio_mask)
        ctc_logits = self.ctc_logits(xa) if self.ctc is not None else None
        translation = self.translation_ctc_logits(xa, audio_mask) if self.ctc_translation is not None else None
        lengths = None if audio_mask is None else audio_mask.sum(-1)
        return Output(logits, ctc_logits, lengths, translation)
