"""One training step of this project's model against Hugging Face's WhisperForConditionalGeneration.

    pip install -e ".[bench]"
    python bench/train_step.py [--dims tiny] [--batch 8] [--steps 5]

Both models get the same dims, the same batch of utterances of 2-8 s and the same text tokens, and are
timed over forward + backward + AdamW step. Hugging Face's encoder only takes 30 s of mel frames, so it
pads every utterance to 30 s; this project pads to the batch's longest. Printed: milliseconds per step,
the ratio, and the share of encoder frames each wastes on padding. On a GPU it also runs bf16 and
prints tokens/s and model FLOPs utilisation against the GPU's bf16 peak (--peak-tflops).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from asr.audio import N_FRAMES, SAMPLE_RATE, log_mel_spectrogram_batch
from asr.checkpoint import model_dims
from asr.config import model_preset
from asr.model import Model, ModelDims

N_VOCAB = 51865


def make_batch(n: int, seed: int = 0) -> dict:
    """``n`` noise utterances of 2-8 s with 20-40 text tokens each (timing does not depend on content)."""
    generator = torch.Generator().manual_seed(seed)
    seconds = 2 + 6 * torch.rand(n, generator=generator)
    audios = [0.1 * torch.randn(int(s * SAMPLE_RATE), generator=generator) for s in seconds]
    mel, n_frames = log_mel_spectrogram_batch(audios)
    lengths = torch.randint(20, 41, (n,), generator=generator)
    tokens = torch.randint(0, 50000, (n, int(lengths.max()) + 1), generator=generator)
    labels = tokens[:, 1:].clone()
    labels[torch.arange(labels.shape[1]) >= lengths[:, None]] = -100
    return {"mel": mel, "n_frames": n_frames, "tokens": tokens[:, :-1], "labels": labels, "seconds": seconds}


def dims_of(name: str) -> ModelDims:
    return model_dims(model_preset(name), N_VOCAB)


def ours(dims: ModelDims, batch: dict, device: torch.device):
    model = Model(dims).to(device).train()
    mel, n_frames = batch["mel"].to(device), batch["n_frames"].to(device)
    tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)

    def loss():
        logits = model(mel, tokens, n_frames).logits
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    return model, loss


def huggingface(dims: ModelDims, batch: dict, device: torch.device):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer, encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        attn_implementation="sdpa", dropout=0.0)
    model = WhisperForConditionalGeneration(config).to(device).train()
    mel = F.pad(batch["mel"], (0, N_FRAMES - batch["mel"].shape[-1])).to(device)  # its encoder takes 30 s only
    tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)

    def loss():
        logits = model(input_features=mel, decoder_input_ids=tokens).logits
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    return model, loss


def time_steps(model, loss, steps: int, device: torch.device, dtype: torch.dtype | None) -> float:
    """Seconds per forward + backward + AdamW step, after one warm-up step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step():
        with autocast:
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def training_flops(dims: ModelDims, batch: dict, padded_frames: int) -> float:
    """About 6 x parameters x positions for the encoder and the decoder (attention scores left out)."""
    model = Model(dims)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    positions = len(batch["seconds"]) * (padded_frames // 2)
    return 6 * (encoder * positions + decoder * batch["tokens"].numel())


def report(dims_name: str, batch: dict, device: torch.device, steps: int, dtype, peak_tflops: float | None) -> None:
    dims = dims_of(dims_name)
    frames = batch["n_frames"].float()
    ours_padding = 1 - frames.mean().item() / batch["mel"].shape[-1]
    hf_padding = 1 - frames.mean().item() / N_FRAMES
    ours_s = time_steps(*ours(dims, batch, device), steps, device, dtype)
    hf_s = time_steps(*huggingface(dims, batch, device), steps, device, dtype)
    precision = "fp32" if dtype is None else "bf16"
    print(f"{dims_name} dims, {device.type}, {precision}, {len(frames)} utterances of "
          f"{batch['seconds'].min():.1f}-{batch['seconds'].max():.1f} s:")
    print(f"  this project   {ours_s * 1000:8.1f} ms/step   padding {ours_padding:6.1%} of encoder frames")
    print(f"  transformers   {hf_s * 1000:8.1f} ms/step   padding {hf_padding:6.1%} of encoder frames")
    print(f"  speed-up       {hf_s / ours_s:8.2f}x")
    if device.type == "cuda":
        tokens = int((batch["labels"] != -100).sum())
        flops = training_flops(dims, batch, batch["mel"].shape[-1])
        line = f"  tokens/s {tokens / ours_s:,.0f}"
        if peak_tflops:
            line += f"   MFU {flops / ours_s / (peak_tflops * 1e12):.1%} of {peak_tflops:g} TFLOP/s bf16"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = make_batch(args.batch)
    report(args.dims, batch, torch.device("cpu"), args.steps, None, None)
    if torch.cuda.is_available():
        for name in ("base", "small"):
            big = make_batch(args.batch * 4, seed=1)
            report(name, big, torch.device("cuda"), args.steps * 4, torch.bfloat16, args.peak_tflops)


if __name__ == "__main__":
    main()
