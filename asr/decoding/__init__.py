"""Decoding: from a model's logits to text.

    from asr.decoding import DecodingOptions, decode, decode_with_fallback
    results = decode_with_fallback(model, mel, n_frames, tokenizer, DecodingOptions(beam_size=5))

Modules, in the order the data flows:

- ``filters``: logit filters, ``apply(logits, tokens)`` masks what may come next (a character begun
  in byte pieces finished, blank start, suppressed tokens, Whisper's timestamp grammar);
- ``search``: token decoders, ``update`` / ``finalize`` (greedy or sampling, beam search over the KV
  cache), and the ranker that picks one candidate per item;
- ``ctc``: joint CTC/attention decoding, the CTC head's prefix scores added to the decoder's (the
  default for a model with a CTC head: it stops the loops a weakly trained decoder falls into);
- ``greedy``: ``detect``, language and no-speech probabilities from the first decoder step;
- ``decode``: options, result, language detection, and ``decode``, which wires the strategies and
  runs the main loop; ``greedy_decode``, the minimal search the trainer validates with, runs the same
  loop (its processes must agree on when to stop, which the loop's ``all_finished`` hook provides);
- ``fallback``: ``decode_with_fallback``, re-decoding at higher temperatures the items that fail.
"""

from asr.decoding.decode import (
    DecodingOptions,
    DecodingResult,
    compression_ratio,
    decode,
    decode_features,
    detect_language,
)
from asr.decoding.fallback import decode_with_fallback

__all__ = [
    "DecodingOptions",
    "DecodingResult",
    "compression_ratio",
    "decode",
    "decode_features",
    "decode_with_fallback",
    "detect_language",
]
