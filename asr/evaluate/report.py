"""An evaluation written to a directory: numbers, a readable report, plots and every hypothesis.

    write_report("eval/dev", metrics, hyps, run_dir=Path("runs/demo"))
    # eval/dev/metrics.json  report.md  hyps.jsonl
    #          wer_by_language.png  lid_confusion.png  training_curves.png
    #          long_form/<id>.srt  long_form/<id>.ref.srt   (the recordings transcribed whole)

``metrics`` holds the outputs of ``asr.evaluate.metrics``, each under its own key and each optional:
``{"wer": word_error_rates(...), "translation": translation_scores(...), "language_id": language_id(...),
"no_speech": no_speech(...), "timestamps": timestamp_error(...), "long_form_wer": word_error_rates(...)}``;
other keys go into metrics.json only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: figures are plain objects rendered by Agg

from asr.decoding.writers import to_srt

HYP_FIELDS = ("id", "reference", "hypothesis", "language", "language_probs", "no_speech_prob", "task")
PLOT_DPI = 100
LONG_FORM_DIR = "long_form"  # subtitles of the long-form transcriptions the timestamp error is taken on


def write_report(out_dir: str | Path, metrics: dict, hyps: list[dict], run_dir: Path | None = None) -> Path:
    """Writes metrics.json, hyps.jsonl, the plots that the metrics allow, and report.md linking them.
    Training curves come from ``run_dir/log.jsonl`` when ``run_dir`` is given. Returns report.md's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    write_hyps(out_dir / "hyps.jsonl", hyps)
    write_subtitles(out_dir / LONG_FORM_DIR, hyps)
    plots = []
    if metrics.get("wer", {}).get("languages"):
        plots.append(plot_wer_by_language(metrics["wer"], out_dir / "wer_by_language.png"))
    if metrics.get("language_id", {}).get("labels"):
        plots.append(plot_confusion(metrics["language_id"], out_dir / "lid_confusion.png"))
    if run_dir is not None and (Path(run_dir) / "log.jsonl").exists():
        plots.append(plot_training_curves(Path(run_dir) / "log.jsonl", out_dir / "training_curves.png"))
    report = out_dir / "report.md"
    report.write_text(markdown(metrics, [p.name for p in plots if p is not None]), encoding="utf-8")
    return report


def write_hyps(path: Path, hyps: list[dict]) -> None:
    """One JSON line per cut, ``HYP_FIELDS`` first (null when absent), then any other keys."""
    with open(path, "w", encoding="utf-8") as f:
        for hyp in hyps:
            row = {key: hyp.get(key) for key in HYP_FIELDS} | hyp
            f.write(json.dumps(_json_safe(row), ensure_ascii=False) + "\n")


def write_subtitles(out_dir: Path, hyps: list[dict]) -> None:
    """``<id>.srt`` of each long-form transcription (the rows of task "timestamps"), and ``<id>.ref.srt``
    of its reference, side by side for a look or a subtitle editor."""
    for hyp in hyps:
        if hyp.get("task") == "timestamps":
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{hyp['id']}.srt").write_text(to_srt(hyp), encoding="utf-8")
            (out_dir / f"{hyp['id']}.ref.srt").write_text(to_srt({"segments": hyp["reference_segments"]}),
                                                          encoding="utf-8")


def _json_safe(value):
    """NaN and infinity are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# Markdown

def markdown(metrics: dict, plots: list[str]) -> str:
    sections = ["# Evaluation\n"]
    for key, section in (("wer", _wer_section), ("wer_by", _wer_by_section), ("translation", _translation_section),
                         ("language_id", _lid_section), ("no_speech", _no_speech_section),
                         ("timestamps", _timestamp_section), ("long_form_wer", _long_form_section)):
        if metrics.get(key):
            sections.append(section(metrics[key]))
    if plots:
        sections.append("## Plots\n\n" + "".join(f"![{Path(p).stem}]({p})\n\n" for p in plots).rstrip() + "\n")
    return "\n".join(sections)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _wer_section(wer: dict, title: str = "Transcription (WER and CER, %)", items: str = "utterances") -> str:
    rows = [[language, _percent(c["wer"]), _percent(c["cer"]), c["utterances"], c["words"], c["skipped_empty"]]
            for language, c in wer["languages"].items()]
    mean, pooled = wer["mean_over_languages"], wer["pooled"]
    rows.append(["**mean over languages**", _percent(mean["wer"]), _percent(mean["cer"]), "", "", ""])
    rows.append(["**pooled**", _percent(pooled["wer"]), _percent(pooled["cer"]), pooled["utterances"],
                 pooled["words"], pooled["skipped_empty"]])
    character_languages = [language for language, c in wer["languages"].items() if c["unit"] == "character"]
    note = (f"\nWER of {', '.join(character_languages)} is computed on characters (written without spaces).\n"
            if character_languages else "")
    return (f"## {title}\n\n"
            + _table(["language", "WER", "CER", items, "words", "empty refs skipped"], rows) + note)


def _long_form_section(wer: dict) -> str:
    """The WER table of the recordings transcribed whole (each scored as one utterance)."""
    return _wer_section(wer, "Long-form transcription, whole recordings (WER and CER, %)", "recordings")


def _wer_by_section(wer_by: dict) -> str:
    groups = wer_by["groups"]
    languages = sorted({language for wer in groups.values() for language in wer["languages"]})
    rows = [[value, _percent(wer["mean_over_languages"]["wer"]), _percent(wer["pooled"]["wer"]),
             wer["pooled"]["utterances"], *(_percent(wer["languages"].get(language, {}).get("wer"))
                                           for language in languages)]
            for value, wer in groups.items()]
    return (f"## Transcription by {wer_by['key']} (WER, %)\n\n"
            + _table([wer_by["key"], "mean over languages", "pooled", "utterances", *languages], rows))


def _translation_section(scores: dict) -> str:
    """Corpus BLEU and chrF over every translated cut, then by source language where the metrics have it."""
    groups = {"all": scores, **scores.get("languages", {})}
    rows = [[name, _number(group.get("bleu")), _number(group.get("chrf")), group.get("n", "?")]
            for name, group in groups.items()]
    return "## Translation to English\n\n" + _table(["source language", "BLEU", "chrF", "cuts"], rows)


def _lid_section(lid: dict) -> str:
    labels = lid["labels"]
    rows = [[f"**{ref}**"] + [lid["confusion"].get(ref, {}).get(hyp, 0) for hyp in labels] for ref in labels]
    return (f"## Language identification\n\nAccuracy: {_percent(lid['accuracy'])} % of {lid.get('n', '?')}\n\n"
            "Rows: reference language; columns: detected language.\n\n" + _table(["", *labels], rows))


def _no_speech_section(counts: dict) -> str:
    rows = [[_number(counts["precision"], 3), _number(counts["recall"], 3), _number(counts["f1"], 3),
             counts["tp"], counts["fp"], counts["fn"], counts["tn"]]]
    return ("## No-speech detection (no-speech is the positive class)\n\n"
            + _table(["precision", "recall", "F1", "TP", "FP", "FN", "TN"], rows))


def _timestamp_section(error: dict) -> str:
    rows = [[_number(error["mae"], 3), error["n"], error["matched"], error["unmatched_references"],
             error["unmatched_hypotheses"]]]
    return ("## Segment timestamps\n\n"
            + _table(["MAE (s)", "boundaries", "matched segments", "unmatched refs", "unmatched hyps"], rows))


# Plots

def plot_wer_by_language(wer: dict, path: Path) -> Path:
    languages = list(wer["languages"])
    values = [100 * (wer["languages"][lang]["wer"] or 0.0) for lang in languages]
    figure = Figure(figsize=(max(4.0, 0.6 * len(languages) + 2), 3.5))
    axes = figure.subplots()
    bars = axes.bar(languages, values, color="tab:blue")
    axes.bar_label(bars, fmt="%.1f")
    if wer["pooled"]["wer"] is not None:
        axes.axhline(100 * wer["pooled"]["wer"], color="tab:red", linestyle="--", label="pooled")
        axes.legend()
    axes.margins(y=0.12)  # room for the labels above the bars
    axes.set(xlabel="language", ylabel="WER (%)", title="WER by language")
    figure.tight_layout()
    figure.savefig(path, dpi=PLOT_DPI)
    return path


def plot_confusion(lid: dict, path: Path) -> Path:
    labels = lid["labels"]
    counts = np.array([[lid["confusion"].get(r, {}).get(h, 0) for h in labels] for r in labels])
    size = max(3.5, 0.5 * len(labels) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(labels)), labels, rotation=90)
    axes.set_yticks(range(len(labels)), labels)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            axes.text(j, i, str(count), ha="center", va="center",
                      color="white" if count > counts.max() / 2 else "black")
    axes.set(xlabel="detected", ylabel="reference", title="Language ID confusion")
    figure.tight_layout()
    figure.savefig(path, dpi=PLOT_DPI)
    return path


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """The training records (with "loss") and validation records (with "dev_" keys) of a log.jsonl."""
    train, dev = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "step" not in record:
            continue
        if any(key.startswith("dev_") for key in record):
            dev.append(record)
        elif "loss" in record:
            train.append(record)
    return train, dev


def plot_training_curves(log: Path, path: Path) -> Path | None:
    """Loss (and dev_loss) against step; dev_wer against step beside it when the log has it.
    None when the log has no records to plot."""
    train, dev = read_log(log)
    dev_wer = [r for r in dev if r.get("dev_wer") is not None]
    if not train and not dev:
        return None
    figure = Figure(figsize=(10 if dev_wer else 5.5, 3.5))
    loss_axes, *wer_axes = figure.subplots(1, 2 if dev_wer else 1, squeeze=False)[0]
    loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", linewidth=1)
    dev_loss = [r for r in dev if r.get("dev_loss") is not None]
    if dev_loss:
        loss_axes.plot([r["step"] for r in dev_loss], [r["dev_loss"] for r in dev_loss], "o-", label="dev loss")
    loss_axes.set(xlabel="step", ylabel="loss", title="Loss")
    loss_axes.legend()
    if dev_wer:
        wer_axes[0].plot([r["step"] for r in dev_wer], [100 * r["dev_wer"] for r in dev_wer], "o-",
                         color="tab:green")
        wer_axes[0].set(xlabel="step", ylabel="WER (%)", title="Dev WER")
    figure.tight_layout()
    figure.savefig(path, dpi=PLOT_DPI)
    return path
