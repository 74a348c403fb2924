"""The data side: from the files a user has to batches the trainer eats.

Manifests are lhotse CutSets (``.jsonl.gz``) under ``manifests/<corpus>/``; any lhotse tool opens them.
What this project puts in them:

Supervision (one timed speech segment; ``lhotse.SupervisionSegment``)
    ``text``        the transcript as given (weak: it may be wrong)
    ``language``    an ISO 639-1 code from ``asr.tokenizer.LANGUAGES`` ("en", "de", "zh", ...)
    ``custom``      ``translation``: the English translation of ``text``, where known (X->English pairs);
                    ``source``: where the label came from ("folder", "tsv", "kaldi", "nemo", "lhotse", "demo");
                    ``weak``: True unless the label is known to be verified.

Cut (one training example of at most 30 s; ``lhotse.MonoCut``)
    ``supervisions``  the segments inside the cut, times relative to the cut's start
    ``custom``        ``prev_text``: the text of the window before it in the same recording, for
                      ``<|startofprev|>`` prompts; ``nospeech``: True for a cut with no speech (it then has
                      no supervisions); ``task``: "translate" where cleaning found English text on
                      non-English audio, or dropped the transcript but kept the recorded translation
                      (the cut trains X->English only: the words heard are unknown);
                      ``dropped_by`` / ``dropped_reasons``: the first / every cleaning rule that fired
                      (dropped sets only); ``transcript_dropped_by`` / ``transcript_dropped_reasons``:
                      the same for a cut kept with only its translation; ``suspect_by`` /
                      ``suspect_reasons``: the same for a cut kept for the model to judge (its transcript
                      trains only where loss truncation finds it plausible; clean.defer_rules);
                      ``unlabelled``: on an imported recording, ``[[start, end], ...]`` s of speech
                      whose item was skipped for its text, which windows keep out (asr.data.windows).

The synthetic demo corpus also records the truth of each label it corrupted, in the supervision's
``custom``: ``corruption`` (None or the kind), ``true_text`` and ``true_language``, so that the
cleaning rules' precision and recall can be measured.
"""


def is_nospeech(cut) -> bool:
    """Whether ``cut`` is marked as holding no speech (``custom["nospeech"]``, above)."""
    return bool((cut.custom or {}).get("nospeech"))


def is_translation_only(cut) -> bool:
    """Whether ``cut`` trains X->English only, the words heard unknown (``custom["task"]``, above)."""
    return (cut.custom or {}).get("task") == "translate"


def is_suspect(cut) -> bool:
    """Whether cleaning left ``cut``'s transcript for the model to judge (``custom["suspect_by"]``, above)."""
    return bool((cut.custom or {}).get("suspect_by"))
