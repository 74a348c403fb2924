from asr.evaluate.compare import Row, compare, flatten, format_table

A = {"wer": {"pooled": {"wer": 0.25, "words": 40}, "languages": {"de": {"wer": 0.5, "unit": "word"}}},
     "translation": {"bleu": 20.0, "chrf": None}, "labels": ["de"], "ok": True}
B = {"wer": {"pooled": {"wer": 0.2, "words": 40}, "languages": {"fr": {"wer": 0.1, "unit": "word"}}},
     "translation": {"bleu": 25.5, "chrf": None}}


def test_flatten_keeps_numbers_only():
    assert flatten(A) == {"wer.pooled.wer": 0.25, "wer.pooled.words": 40, "wer.languages.de.wer": 0.5,
                          "translation.bleu": 20.0, "translation.chrf": None}


def test_compare_rows():
    rows = compare(A, B)
    assert rows == [Row("wer.pooled.wer", 0.25, 0.2), Row("wer.pooled.words", 40, 40),
                    Row("wer.languages.de.wer", 0.5, None), Row("translation.bleu", 20.0, 25.5),
                    Row("wer.languages.fr.wer", None, 0.1)]
    assert rows[3].difference == 5.5 and rows[2].difference is None


def test_format_table():
    assert format_table(compare(A, B)) == (
        "| metric | A | B | B−A |\n"
        "|---|---|---|---|\n"
        "| wer.pooled.wer | 0.2500 | 0.2000 | -0.0500 |\n"
        "| wer.pooled.words | 40 | 40 | +0 |\n"
        "| wer.languages.de.wer | 0.5000 | – | – |\n"
        "| translation.bleu | 20.0000 | 25.5000 | +5.5000 |\n"
        "| wer.languages.fr.wer | – | 0.1000 | – |\n"
    )
