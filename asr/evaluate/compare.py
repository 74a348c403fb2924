"""Evaluations side by side: the difference of two (every numeric metric of either metrics.json),
and the headline figures of any number of runs, one row each. A row may stand for several runs of one
setting (seeds): its figures are their mean, with the range beside it.

    rows = compare(json.load(open("eval/base/metrics.json")), json.load(open("eval/new/metrics.json")))
    print(format_table(rows))
    # | metric | A | B | B−A |
    # |---|---|---|---|
    # | wer.pooled.wer | 0.2500 | 0.2000 | -0.0500 |
    print(headline_table([("weak labels", [weak_seed1, weak_seed2]), ("true labels", true)]))
    # | weak labels | 5.26% (5.24–5.28) | ...
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    metric: str  # dotted path into metrics.json, e.g. "wer.languages.de.wer"
    a: float | None  # None: absent (or null) in A
    b: float | None

    @property
    def difference(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


def flatten(metrics: dict, prefix: str = "") -> dict[str, float | None]:
    """The numbers of a nested dict under dotted keys; null values are kept as None, text and lists
    are left out (booleans are not numbers here).

    >>> flatten({"wer": {"de": 0.5, "unit": "word"}, "n": 3, "x": None})
    {'wer.de': 0.5, 'n': 3, 'x': None}
    """
    flat = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            flat[path] = value
    return flat


def compare(a: dict, b: dict) -> list[Row]:
    """One row per numeric metric present in either, in A's order, then those only in B.
    A metric that is null on both sides is left out."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    rows = [Row(k, flat_a.get(k), flat_b.get(k)) for k in keys]
    return [row for row in rows if row.a is not None or row.b is not None]


def mean_metrics(runs: list[dict]) -> dict[str, float | None]:
    """The flattened metrics of several runs of one setting, each number the mean over the runs that
    have it (as it is where one run has it; None where none has).

    >>> mean_metrics([{"wer": {"de": 0.5}, "n": 3}, {"wer": {"de": 0.25}, "n": None}])
    {'wer.de': 0.375, 'n': 3}
    """
    flats = [flatten(run) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    means = {}
    for key in keys:
        values = [flat[key] for flat in flats if flat.get(key) is not None]
        means[key] = (values[0] if len(values) == 1 else sum(values) / len(values)) if values else None
    return means


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_table(rows: list[Row]) -> str:
    """A Markdown table: metric, A, B, B−A (– where a side lacks the metric); integers as integers,
    other numbers with 4 decimals."""
    lines = ["| metric | A | B | B−A |", "|---|---|---|---|"]
    lines += [f"| {r.metric} | {_cell(r.a)} | {_cell(r.b)} | {_cell(r.difference, signed=True)} |" for r in rows]
    return "\n".join(lines) + "\n"


# The figures a run is judged by: (label, dotted key into metrics.json, scale for printing, unit).
HEADLINE = (
    ("WER, mean over languages", "wer.mean_over_languages.wer", 100, "%"),
    ("WER, worst language", "wer.worst_language", 100, "%"),
    ("X->English BLEU", "translation.bleu", 1, ""),
    ("language ID accuracy", "language_id.accuracy", 100, "%"),
    ("no-speech F1", "no_speech.f1", 1, ""),
    ("timestamp MAE (s)", "timestamps.mae", 1, ""),
    ("long-form WER, mean over languages", "long_form_wer.mean_over_languages.wer", 100, "%"),
)


HEADLINE_UNITS = {label: (scale, unit) for label, _, scale, unit in HEADLINE}


def headline(metrics: dict) -> dict[str, float | None]:
    """The HEADLINE figures of an asr-eval metrics.json by label (None where not measured)."""
    flat = flatten(metrics)
    languages = [v for k, v in flat.items() if k.startswith("wer.languages.") and k.endswith(".wer") and v is not None]
    flat["wer.worst_language"] = max(languages, default=None)
    return {label: flat.get(key) for label, key, _, _ in HEADLINE}


def format_headline(label: str, value: float | None) -> str:
    scale, unit = HEADLINE_UNITS[label]
    return "–" if value is None else f"{value * scale:.2f}{unit}"


def _group_cell(label: str, values: list[float | None]) -> str:
    """One figure of several runs: their mean, then the lowest and highest in brackets (the runs that
    lack it left out)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return format_headline(label, values[0] if values else None)
    scale, unit = HEADLINE_UNITS[label]
    low, high = min(values) * scale, max(values) * scale
    return f"{format_headline(label, sum(values) / len(values))} ({low:.2f}–{high:.2f})"


def headline_table(runs: list[tuple[str, dict | list[dict]]]) -> str:
    """A Markdown table with one row per (name, metrics) and one column per HEADLINE figure. A list of
    metrics (runs of one setting with other seeds) gives each figure's mean over them and its range: the
    worst language is each run's own worst, averaged."""
    lines = ["| run | " + " | ".join(label for label, *_ in HEADLINE) + " |",
             "|---|" + "---|" * len(HEADLINE)]
    for name, metrics in runs:
        figures = [headline(m) for m in (metrics if isinstance(metrics, list) else [metrics])]
        cells = [_group_cell(label, [f[label] for f in figures]) for label, *_ in HEADLINE]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
