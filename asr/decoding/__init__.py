"""Decoding: from a model's logits to text.

``greedy`` is the batched greedy search the trainer validates with; the full transcribe stack (beam
search, temperature fallback, timestamp rules, long-form) builds on the same KV cache.
"""
