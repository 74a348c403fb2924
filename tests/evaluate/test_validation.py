"""How validation sums its decoded texts up: per task, per language, and the CTC head's apart."""

import pytest

from asr.evaluate.validation import _summarise


def test_transcripts_translations_and_ctc_best_paths_are_scored_apart():
    texts = {
        ("transcribe", "en"): (["the cat sat"], ["the cat sad"]),
        ("transcribe", "de"): (["die katze"], ["die katze"]),
        ("translate", "de"): (["the cat"], ["a cat"]),
        ("ctc", "en"): (["the cat sat"], ["xyz"]),
    }
    metrics = _summarise(texts, lid=[True, False], nospeech=[True, True, True, False])
    assert metrics["dev_wer_en"] == pytest.approx(1 / 3) and metrics["dev_wer_de"] == 0.0
    assert metrics["dev_wer"] == pytest.approx(1 / 5)  # corpus WER over both languages' words
    assert metrics["dev_translate_wer"] == pytest.approx(1 / 2)
    assert metrics["dev_ctc_wer"] == 1.0 and metrics["dev_ctc_cer"] == 1.0  # 3 substitutions, 8 deletions
    assert "dev_ctc_wer_en" not in metrics  # per-language figures are the decoder's only
    assert metrics["dev_lid_acc"] == 0.5 and metrics["dev_nospeech_acc"] == 0.75
