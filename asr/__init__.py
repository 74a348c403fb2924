"""Train Whisper-style multitask speech models on weak transcripts.

The data flows through one module per stage:
manifests (asr.data) -> audio features (asr.audio) -> tokens (asr.tokenizer) -> model (asr.model)
-> checkpoint (asr.checkpoint).
"""

__version__ = "0.1.0"
