"""``asr-transcribe AUDIO... --model CKPT``: transcribe recordings of any length with a checkpoint, writing
txt, srt, vtt, tsv and json files (openai-whisper's flags and defaults; see asr.decoding.transcribe).

    asr-transcribe talk.flac interview.wav --model model.pt --language de --output_format srt --output_dir out/

Exit status: 0 when every file was transcribed, 1 when some could not be read (each is named on
stderr; the others are still transcribed), 2 for a bad checkpoint or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.checkpoint import CheckpointError, load
from asr.cli import boolean, default_device
from asr.decoding import DecodingOptions
from asr.decoding.ctc import DEFAULT_WEIGHT, default_weight
from asr.decoding.transcribe import TranscribeOptions, pieces_by_default, transcribe_many
from asr.decoding.writers import FORMATS, get_writer
from asr.tokenizer import LANGUAGES, TASKS

PROG = "asr-transcribe"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = load(args.model, args.device)
        if loaded.tokenizer is None:
            raise CheckpointError(f"{args.model}: the checkpoint carries no tokenizer (an OpenAI checkpoint?)")
        if args.language not in ("auto", *loaded.tokenizer.specials.languages):
            known = ", ".join(loaded.tokenizer.specials.languages)
            raise ValueError(f"--language {args.language}: this model knows {known}")
        options = transcribe_options(args, mask_padding=loaded.config is not None
                                     and not loaded.config.features.pad_to_30s,
                                     ctc_weight=default_weight(loaded.model),
                                     pieces=pieces_by_default(loaded.model))
    except (CheckpointError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    write = get_writer(args.output_format, args.output_dir)
    failed = 0
    results = transcribe_many(loaded.model, loaded.tokenizer, args.audio, options, args.batch_size)
    for path, result in tqdm(results, total=len(args.audio), desc="transcribing", unit="file", file=sys.stderr):
        if isinstance(result, Exception):
            failed += 1
            tqdm.write(f"{PROG}: {_reason(path, result)}", file=sys.stderr)
            continue
        write(result, path)
        tqdm.write(f"{path}: {result['text'].strip()}", file=sys.stdout)
    return 1 if failed else 0


def transcribe_options(args: argparse.Namespace, mask_padding: bool = False,
                       ctc_weight: float = 0.0, pieces: bool = False) -> TranscribeOptions:
    """The library's options from the parsed flags; raises ValueError for inconsistent ones.

    ctc_weight : the weight when the flag leaves it unset (``--ctc_weight None``)
    pieces : whether to transcribe in pieces when the flag leaves it unset (``--pieces None``)"""
    decoding = DecodingOptions(
        task=args.task, language=None if args.language == "auto" else args.language,
        beam_size=args.beam_size, best_of=args.best_of or 1, patience=args.patience,
        length_penalty=args.length_penalty, suppress_tokens=args.suppress_tokens,
        without_timestamps=args.without_timestamps,
        ctc_weight=ctc_weight if args.ctc_weight is None else args.ctc_weight,
    )
    return TranscribeOptions(
        decoding=decoding, temperatures=temperatures(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold, logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold, condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt, mask_padding=mask_padding,
        pieces=pieces if args.pieces is None else args.pieces,
    )


def temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    """Whisper's schedule: start, start + increment, ... up to 1.0; just start without an increment.

    >>> temperatures(0.0, 0.2)
    (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    """
    if increment is None or increment <= 0:
        return (start,)
    return tuple(round(float(t), 6) for t in np.arange(start, 1.0 + 1e-6, increment)) or (start,)


def _reason(path: str, error: Exception) -> str:
    """``<path>: <why>``; AudioError messages already start with the path."""
    message = str(error)
    return message if message.startswith(f"{path}:") else f"{path}: {message}"


def _optional(kind):
    """A number, or None written as "None" (Whisper's flags turn a threshold off that way)."""
    return lambda value: None if value == "None" else kind(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", nargs="+", help="audio files to transcribe")
    p.add_argument("--model", required=True, help="a checkpoint (asr-export's, or asr.checkpoint.save's)")
    p.add_argument("--device", default=default_device(), help="cpu or cuda")
    p.add_argument("--output_dir", "-o", default=".", help="folder for the output files")
    p.add_argument("--output_format", "-f", default="all", choices=[*FORMATS, "all"], help="files to write")
    p.add_argument("--batch_size", type=int, default=8, help="recordings decoded together")
    p.add_argument("--task", default="transcribe", choices=TASKS, help="transcribe (X -> X) or translate (X -> en)")
    p.add_argument("--language", default="auto", choices=["auto", *LANGUAGES], metavar="CODE",
                   help="the spoken language; auto: detected on each file's first 30 s")
    p.add_argument("--temperature", type=float, default=0.0, help="the first decoding temperature")
    p.add_argument("--temperature_increment_on_fallback", type=_optional(float), default=0.2,
                   help="added to the temperature each time a window fails the thresholds below; None: no fallback")
    p.add_argument("--best_of", type=_optional(int), default=5, help="samples per window at temperature > 0")
    p.add_argument("--beam_size", type=_optional(int), default=5, help="beams at temperature 0; None: greedy")
    p.add_argument("--patience", type=float, default=1.0, help="beam search patience (arXiv:2204.05424)")
    p.add_argument("--ctc_weight", type=_optional(float), default=None,
                   help=f"joint CTC/attention decoding: the CTC head's weight in [0, 1), 0: the decoder alone; "
                        f"None: {DEFAULT_WEIGHT} for a model with a CTC head, else 0 (translation: with the "
                        f"translation CTC branch where the model has one, else the decoder alone)")
    p.add_argument("--length_penalty", type=_optional(float), default=None,
                   help="alpha of Google NMT's length penalty; default: divide by the length")
    p.add_argument("--suppress_tokens", default="-1",
                   help="comma-separated ids never generated; -1: non-speech symbols")
    p.add_argument("--initial_prompt", default=None, help="text that prompts the first window")
    p.add_argument("--condition_on_previous_text", type=boolean, default=True,
                   help="prompt each window with the text before it (True or False)")
    p.add_argument("--compression_ratio_threshold", type=_optional(float), default=2.4,
                   help="a window whose text compresses better than this is decoded again hotter")
    p.add_argument("--logprob_threshold", type=_optional(float), default=-1.0,
                   help="a window whose average log probability is below this is decoded again hotter")
    p.add_argument("--no_speech_threshold", type=_optional(float), default=0.6,
                   help="<|nospeech|> probability above which an unlikely window counts as silence")
    p.add_argument("--without_timestamps", action="store_true", help="text only: one segment per 30 s window")
    p.add_argument("--pieces", type=_optional(boolean), default=None,
                   help="cut recordings at the pauses the CTC head hears and decode the pieces as clips, "
                        "instead of 30 s window after window (True or False; needs a CTC head); None: True "
                        "for a model with a CTC head (the demo model: word error 7%% against 96%% window "
                        "after window on its long-form test recordings)")
    return p


if __name__ == "__main__":
    sys.exit(main())
