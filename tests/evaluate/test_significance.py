import json

import numpy as np
import pytest

from asr.evaluate.metrics import translation_scores, word_error_rates
from asr.evaluate.significance import format_differences, load_hyps, paired_differences

SENTENCES = [("de", "der hund sieht die katze im park", "The dog sees the cat in the park."),
             ("fr", "le chien voit le chat dans le parc", "The dog sees the cat in the park."),
             ("de", "die katze schläft heute im garten", "Today the cat sleeps in the garden."),
             ("fr", "la reine lave le cheval", "The queen washes the horse."),
             ("en", "the boy finds the bird", None)] * 8


def _run(damage) -> dict:
    """A run's hypotheses: every sentence right but where damage(k) gives a wrong transcript and translation."""
    run = {"translate": {}, "transcribe": {}}
    for k, (language, text, english) in enumerate(SENTENCES):
        bad = damage(k)
        run["transcribe"][f"c{k}"] = (language, text, " ".join(text.split()[:-2]) if bad else text)
        if english:
            run["translate"][f"c{k}"] = (language, english, "The bird flies." if bad else english)
    return run


def _figures(run: dict) -> tuple[float, float]:
    """BLEU and mean WER as asr-eval's metrics.json has them."""
    languages, refs, hyps = zip(*run["transcribe"].values())
    _, english, translations = zip(*run["translate"].values())
    return (translation_scores(list(english), list(translations))["bleu"],
            word_error_rates(list(refs), list(hyps), list(languages))["mean_over_languages"]["wer"])


def test_the_point_difference_is_the_difference_of_the_metrics():
    base, weak, seed2 = _run(lambda k: k % 9 == 0), _run(lambda k: k % 2 == 0), _run(lambda k: k % 3 != 1)
    [difference] = paired_differences([("true", [base]), ("weak", [weak, seed2])], n_resamples=100)
    (bleu_base, wer_base), (bleu_weak, wer_weak), (bleu_2, wer_2) = map(_figures, (base, weak, seed2))
    assert difference.bleu.difference == pytest.approx((bleu_weak + bleu_2) / 2 - bleu_base)
    assert difference.wer.difference == pytest.approx((wer_weak + wer_2) / 2 - wer_base)
    assert difference.bleu.low < difference.bleu.difference < difference.bleu.high < 0
    assert 0 < difference.wer.low < difference.wer.difference < difference.wer.high
    assert (difference.n_translated, difference.n_transcribed) == (32, 40)


def test_identical_runs_differ_by_nothing_on_every_resample():
    run = _run(lambda k: k % 3 == 0)
    [difference] = paired_differences([("a", [run]), ("b", [run])], n_resamples=50)
    assert (difference.bleu.difference, difference.bleu.low, difference.bleu.high) == (0.0, 0.0, 0.0)
    assert (difference.wer.low, difference.wer.high) == (0.0, 0.0)


def test_a_small_difference_on_few_cuts_has_an_interval_across_zero():
    """One sentence of 32 translated worse: the test set cannot tell the runs apart."""
    [difference] = paired_differences([("a", [_run(lambda k: False)]), ("b", [_run(lambda k: k == 0)])],
                                      n_resamples=300)
    assert difference.bleu.difference < 0 and difference.bleu.low < difference.bleu.high == 0.0


def test_only_the_cuts_every_run_scored_count():
    full, short = _run(lambda k: False), _run(lambda k: False)
    del short["transcribe"]["c0"], short["translate"]["c0"]
    [difference] = paired_differences([("a", [full]), ("b", [short])], n_resamples=10)
    assert (difference.n_translated, difference.n_transcribed) == (31, 39)
    table = format_differences([difference], "a")
    assert table.splitlines()[2] == "| b | +0.00 (+0.00 to +0.00) | +0.00% (+0.00 to +0.00) | 31 / 39 |"


def test_load_hyps_keeps_the_scored_tasks_and_names_a_bad_line(tmp_path):
    rows = [{"id": "a", "task": "transcribe", "reference_language": "de", "reference": "x", "hypothesis": "y"},
            {"id": "a", "task": "translate", "reference_language": "de", "reference": "X", "hypothesis": "Y"},
            {"id": "n", "task": "nospeech", "reference_language": None, "reference": "", "hypothesis": ""}]
    path = tmp_path / "hyps.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_hyps(path) == {"transcribe": {"a": ("de", "x", "y")}, "translate": {"a": ("de", "X", "Y")}}
    path.write_text(path.read_text() + '{"id": "b", "task": "translate"}\n')
    with pytest.raises(ValueError, match=r"hyps.jsonl:4: not an asr-eval hypothesis row"):
        load_hyps(path)


def test_one_row_is_not_a_comparison():
    with pytest.raises(ValueError, match="two rows"):
        paired_differences([("a", [_run(lambda k: False)])])
    with pytest.raises(ValueError, match="one resample"):
        paired_differences([("a", [_run(lambda k: False)])] * 2, n_resamples=0)
    assert np.isfinite(paired_differences([("a", [_run(lambda k: False)])] * 2, n_resamples=5)[0].bleu.high)
