"""Greedy decoding speed of this project against openai-whisper on identical weights.

    python bench/decode.py [--files 8] [--tokens 64]

A randomly initialised Whisper tiny (openai-whisper's own class) is saved in OpenAI's checkpoint
format and loaded through this project's loader, so both decode the same network. Both decode the
same 2-8 s noise clips greedily, in English, without timestamps, for exactly ``--tokens`` tokens
(``<|endoftext|>`` suppressed in both, so neither stops early and the work is equal). Printed:
seconds per file one file at a time, and per file in one batch of ``--files``; the ratios.
openai-whisper pads every clip to 30 s; this project encodes each clip at its length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from asr.audio import SAMPLE_RATE, log_mel_spectrogram_batch, pad_or_trim
from asr.checkpoint import load
from asr.decoding import DecodingOptions, decode
from asr.tokenizer import LANGUAGES, Tokenizer

WHISPER_TINY = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                    n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


class _Gpt2SizedText:
    """A text codec with Whisper's 50257 text ids, so that the special tokens sit at Whisper's ids.
    Decoding text to a string is not timed, so it returns the ids' count."""

    n_text = 50257

    def encode(self, text: str) -> list[int]:
        return []

    def decode(self, ids: list[int]) -> str:
        return f"<{len(ids)} tokens>"


def clips(n: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    seconds = 2 + 6 * torch.rand(n, generator=generator)
    return [0.1 * torch.randn(int(s * SAMPLE_RATE), generator=generator) for s in seconds]


def time_whisper(model, audios: list[torch.Tensor], tokens: int, batch: bool) -> float:
    import whisper

    eot = 50257
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, sample_len=tokens,
                                      suppress_tokens=[-1, eot], suppress_blank=False)
    mels = torch.stack([whisper.log_mel_spectrogram(pad_or_trim(a)) for a in audios])
    start = time.perf_counter()
    if batch:
        whisper.decode(model, mels, options)
    else:
        for mel in mels:
            whisper.decode(model, mel, options)
    return (time.perf_counter() - start) / len(audios)


def time_ours(model, tokenizer, audios: list[torch.Tensor], tokens: int, batch: bool) -> float:
    options = DecodingOptions(language="en", without_timestamps=True, sample_len=tokens,
                              suppress_tokens=(tokenizer.eot,), suppress_blank=False)
    start = time.perf_counter()
    groups = [audios] if batch else [[a] for a in audios]
    for group in groups:
        mel, n_frames = log_mel_spectrogram_batch(group)
        decode(model, mel, n_frames, tokenizer, options)
    return (time.perf_counter() - start) / len(audios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    import whisper.model

    torch.manual_seed(0)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(**WHISPER_TINY)).eval()
    torch.nn.init.normal_(reference.decoder.positional_embedding, std=0.02)  # Whisper leaves it empty
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.pt"
        torch.save({"dims": WHISPER_TINY, "model_state_dict": reference.state_dict()}, path)
        ours = load(path).model
    tokenizer = Tokenizer(_Gpt2SizedText(), tuple(LANGUAGES)[:99])
    audios = clips(args.files)
    time_whisper(reference, audios[:1], 4, batch=False)  # warm-up
    time_ours(ours, tokenizer, audios[:1], 4, batch=False)
    print(f"{args.files} clips of 2-8 s, greedy, {args.tokens} tokens each, tiny dims, "
          f"{torch.get_num_threads()} threads")
    for batch in (False, True):
        theirs = time_whisper(reference, audios, args.tokens, batch)
        mine = time_ours(ours, tokenizer, audios, args.tokens, batch)
        label = "one file at a time" if not batch else f"batch of {args.files}"
        print(f"  {label:18s} openai-whisper {theirs:6.3f} s/file   this project {mine:6.3f} s/file   "
              f"{theirs / mine:5.2f}x")


if __name__ == "__main__":
    main()
