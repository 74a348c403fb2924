"""``asr-prepare``: manifests from the files people have, then windows, cleaning, shards, vocabulary.

    asr-prepare folder DIR --out manifests/mine [--language de]
    asr-prepare tsv validated.tsv --out manifests/cv-de              # Common Voice as it comes
    asr-prepare kaldi data/train --out manifests/kaldi [--language en]
    asr-prepare nemo train_manifest.json --out manifests/nemo [--language de]
    asr-prepare lhotse cuts.jsonl.gz --out manifests/theirs
    asr-prepare recipe librispeech /data/LibriSpeech --out manifests/librispeech [--download]
    asr-prepare demo manifests/demo [--hours 6] [--seed 0]         # the offline synthetic corpus
    asr-prepare clean manifests/demo/train_windows.jsonl.gz --out manifests/demo/clean [--set key=value]
    asr-prepare score manifests/demo/clean/kept_cuts.jsonl.gz --model runs/demo/model.pt --out manifests/demo/scored
    asr-prepare relabel manifests/demo/clean --model runs/demo/model.pt --out manifests/demo/relabelled
    asr-prepare shar manifests/mine/cuts.jsonl.gz --out shards/mine
    asr-prepare tokenizer manifests/*/cuts.jsonl.gz --out tokenizer.model --vocab-size 4000

Every import writes ``cuts.jsonl.gz`` (long recordings already cut into 30 s windows unless
``--no-window``) and ``import_report.md`` / ``.json`` accounting for every item seen.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from lhotse import CutSet

from asr.cli import default_device
from asr.data import importers
from asr.data.dataset import export_shar, open_cuts
from asr.data.demo import DEFAULT_HOURS
from asr.data.windows import window_cuts
from asr.relabel import RelabelRules


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (importers.DataImportError, FileNotFoundError, ValueError) as e:
        print(f"asr-prepare: error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr-prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def importer(name: str, help: str, source_help: str):
        command = commands.add_parser(name, help=help)
        command.add_argument("source", type=Path, help=source_help)
        command.add_argument("--out", type=Path, required=True, help="output folder, e.g. manifests/<corpus>")
        command.add_argument("--language", help="language of items that do not name one (ISO code)")
        command.add_argument("--no-window", action="store_true", help="keep long recordings whole")
        command.add_argument("--max-duration", type=float, default=30.0, help="window length in seconds")
        return command

    importer("folder", "audio files with same-stem .txt/.srt/.vtt/.sbv/.ass/.ttml transcripts", "the folder").set_defaults(
        run=lambda a: _import(a, importers.import_folder(a.source, language=a.language)))
    tsv = importer("tsv", "a TSV/CSV of path, text, language[, translation]", "the table")
    tsv.add_argument("--audio-root", type=Path, help="folder the paths are relative to")
    tsv.set_defaults(run=lambda a: _import(a, importers.import_tsv(a.source, a.audio_root, a.language)))
    nemo = importer("nemo", "a NeMo or Canary JSON-lines manifest", "the manifest")
    nemo.add_argument("--audio-root", type=Path, help="folder the audio_filepath values are relative to")
    nemo.set_defaults(run=lambda a: _import(a, importers.import_nemo(a.source, a.audio_root, a.language)))
    importer("kaldi", "a Kaldi data folder", "the data folder").set_defaults(
        run=lambda a: _import(a, importers.import_kaldi(a.source, language=a.language)))
    importer("lhotse", "an existing lhotse CutSet manifest", "the manifest").set_defaults(
        run=lambda a: _import(a, importers.import_lhotse(a.source, language=a.language)))

    recipe = commands.add_parser("recipe", help="a corpus that a lhotse recipe prepares, by name")
    recipe.add_argument("name", help="lhotse recipe name, e.g. librispeech, commonvoice, yesno")
    recipe.add_argument("corpus_dir", type=Path)
    recipe.add_argument("--out", type=Path, required=True)
    recipe.add_argument("--language")
    recipe.add_argument("--download", action="store_true", help="download the corpus first (needs network)")
    recipe.add_argument("--no-window", action="store_true")
    recipe.add_argument("--max-duration", type=float, default=30.0)
    recipe.set_defaults(run=_recipe)

    demo = commands.add_parser("demo", help="synthesise the offline demo corpus (eSpeak NG, six languages)")
    demo.add_argument("out", type=Path)
    demo.add_argument("--hours", type=float, default=DEFAULT_HOURS, help="hours of training speech")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--corruption", type=float, default=None,
                      help="share of train clips given a wrong label (default 0.2; 0 switches it off)")
    demo.add_argument("--min-eval-clips", type=int, default=30, help="speech clips per language in dev and test")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(run=_demo)

    clean = commands.add_parser("clean", help="apply the weak-label cleaning rules; report per rule and language")
    clean.add_argument("cuts", type=Path)
    clean.add_argument("--out", type=Path, required=True, help="folder for kept/dropped cuts and the report")
    clean.add_argument("--config", type=Path, help="a run config whose clean: section sets the rules")
    clean.add_argument("--tokenizer", type=Path, help="a SentencePiece .model: lengths and rates in tokens too")
    clean.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a rule setting, e.g. --set rate_outlier_mads=3.5 (repeatable)")
    clean.set_defaults(run=_clean)

    score = commands.add_parser("score", help="score every cut with a trained model's CTC head; flag each "
                                "language's outliers (a second round's training set)")
    score.add_argument("cuts", type=Path)
    score.add_argument("--model", type=Path, required=True, help="a checkpoint of this project (asr-export)")
    score.add_argument("--out", type=Path, required=True, help="folder for kept/flagged cuts, scores and the report")
    score.add_argument("--mads", type=float, default=3.0,
                       help="flag scores above the language's median plus this many scaled MADs")
    score.add_argument("--batch-seconds", type=float, default=120.0, help="seconds of audio per batch")
    score.add_argument("--device", default=default_device())
    score.set_defaults(run=_score)

    relabel = commands.add_parser("relabel", help="re-transcribe with a trained model the windows whose transcript "
                                  "cleaning dropped (a second round's training set)")
    relabel.add_argument("clean_dir", type=Path, help="a cleaning's output folder (kept_cuts, dropped_cuts)")
    relabel.add_argument("--model", type=Path, required=True, help="a checkpoint of this project (asr-export)")
    relabel.add_argument("--out", type=Path, required=True,
                         help="folder for relabelled/rejected cuts, train_cuts.jsonl.gz and the report")
    relabel.add_argument("--beam-size", type=int, default=5)
    rules = RelabelRules()
    for name, help in (("min_avg_logprob", "the search's least score per token"),
                       ("max_compression_ratio", "the text's highest gzip compression ratio"),
                       ("max_no_speech_prob", "the highest no-speech probability"),
                       ("min_language_prob", "the language ID's least probability")):
        relabel.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(rules, name), help=help)
    relabel.add_argument("--keep-label-within", type=int, default=rules.keep_label_within,
                         help="a transcript this many words or fewer from the label keeps the label's words (-1: never)")
    relabel.add_argument("--device", default=default_device())
    relabel.set_defaults(run=_relabel)

    shar = commands.add_parser("shar", help="export cuts with their audio to lhotse Shar shards")
    shar.add_argument("cuts", type=Path)
    shar.add_argument("--out", type=Path, required=True)
    shar.add_argument("--shard-size", type=int, default=1000, help="cuts per shard")
    shar.set_defaults(run=_shar)

    tokenizer = commands.add_parser("tokenizer", help="train the SentencePiece vocabulary on manifests' text")
    tokenizer.add_argument("cuts", type=Path, nargs="+")
    tokenizer.add_argument("--out", type=Path, required=True, help="the .model file to write")
    tokenizer.add_argument("--vocab-size", type=int, default=4000)
    tokenizer.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    tokenizer.add_argument("--doubled-letters", type=int, default=0,
                           help="letters doubled at least this often in the text get a piece of their own (0: none)")
    tokenizer.add_argument("--max-piece-length", type=int, default=16,
                           help="the longest piece learnt, in characters (the leading space mark included)")
    tokenizer.add_argument("--min-char-count", type=int, default=0,
                           help="characters written at least this often are pieces even where the character "
                                "coverage would spell them in bytes (0: coverage alone)")
    tokenizer.set_defaults(run=_tokenizer)
    return parser


def _import(args, result: importers.ImportResult) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"import": result.report.to_dict()}
    markdown = result.report.to_markdown()
    cuts = result.cuts
    if not args.no_window:
        cuts, windows = window_cuts(cuts, max_duration=args.max_duration)
        report["windows"] = windows.to_dict()
        markdown += (f"\n\n## Windows of at most {args.max_duration:g} s\n\n{windows.windowed} long recordings "
                     f"became {windows.windows} windows; {windows.passed} cuts passed unchanged; "
                     f"{len(windows.skipped)} segments left out.\n")
        for skipped in windows.skipped:
            markdown += f"- {skipped.reason}: {skipped.where} {skipped.detail}\n"
    elif unlabelled := sum(bool((cut.custom or {}).get("unlabelled")) for cut in cuts):
        warning = (f"{unlabelled} cuts hold speech without text (custom['unlabelled']: items skipped for "
                   f"their text); without windows it stays in them: run without --no-window to keep it out")
        markdown += f"\n\nWarning: {warning}.\n"
        print(f"warning: {warning}", file=sys.stderr)
    cuts.to_file(args.out / "cuts.jsonl.gz")
    (args.out / "import_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (args.out / "import_report.md").write_text(markdown)
    annotations = sum(result.report.annotations.values())
    print(f"{result.report.imported} imported, {len(result.report.skipped)} skipped"
          + (f", {annotations} annotations left out of the texts" if annotations else "")
          + f" -> {args.out / 'cuts.jsonl.gz'}")
    print(f"report: {args.out / 'import_report.md'}")
    return 0


def _recipe(args) -> int:
    results = importers.prepare_recipe(args.name, args.corpus_dir, args.out / "lhotse", download=args.download,
                                       language=args.language)
    for split, result in results.items():
        split_args = argparse.Namespace(**{**vars(args), "out": args.out / split.replace("/", "-")})
        _import(split_args, result)
    return 0


def _demo(args) -> int:
    make_demo(args.out, args.hours, args.seed, args.corruption, args.min_eval_clips, args.workers)
    return 0


def make_demo(out: Path, hours: float = DEFAULT_HOURS, seed: int = 0, corruption: float | None = None,
              min_eval_clips: int = 30, workers: int = 2) -> None:
    """Synthesise (or reuse) the demo corpus in ``out`` and write each split's 30 s windows beside it,
    and the training split's no-speech clips as a noise bank (``NOSPEECH_BANK``, for ``data.noise``).
    ``corruption``: the share of train clips given a wrong label (None: the default mix, 0: none)."""
    from asr.data.demo import NOSPEECH_BANK, Corruption, make_demo_corpus, write_nospeech_bank

    mix = Corruption()
    if corruption is not None and not math.isclose(corruption, mix.total):
        scale = corruption / mix.total
        mix = Corruption(**{k: v * scale for k, v in dataclasses.asdict(mix).items()})
    corpus = make_demo_corpus(out, hours=hours, seed=seed, corruption=mix, min_eval_clips=min_eval_clips,
                              workers=workers)
    bank = write_nospeech_bank(corpus.manifests["train"], out / NOSPEECH_BANK)
    print(f"train: {bank} no-speech clips -> {out / NOSPEECH_BANK} (a noise bank for data.noise)")
    for split, path in corpus.manifests.items():
        windows, report = window_cuts(CutSet.from_file(path))
        windows.to_file(out / f"{split}_windows.jsonl.gz")
        print(f"{split}: {report.cuts} cuts -> {len(windows)} windows of at most 30 s "
              f"-> {out / f'{split}_windows.jsonl.gz'}")
    hours_made = ", ".join(f"{split} {h:.2f} h" for split, h in corpus.hours.items())
    made = "reused" if corpus.reused else f"made in {corpus.seconds:.0f} s, {corpus.speed:.0f}x real time"
    print(f"{hours_made} of audio in {corpus.out_dir} ({made})")


def _score(args) -> int:
    from asr.scoring import score_checkpoint

    score_checkpoint(args.model, open_cuts(args.cuts), args.out, args.mads, args.batch_seconds, args.device)
    return 0


def _relabel(args) -> int:
    from asr.relabel import relabel_checkpoint

    rules = RelabelRules(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RelabelRules)})
    relabel_checkpoint(args.model, args.clean_dir, args.out, rules, args.beam_size, args.device)
    return 0


def _clean(args) -> int:
    from asr.config import load_config

    config = load_config(args.config, [f"clean.{item}" for item in args.overrides])
    clean(args.cuts, args.out, config.clean, args.tokenizer)
    return 0


def clean(cuts: Path, out: Path, rules, tokenizer_path: Path | None = None) -> None:
    """Apply the cleaning ``rules`` (a CleanConfig) to the manifest ``cuts``; write and summarise."""
    from asr.data.clean import clean_cuts, format_ratio

    tokenizer = None
    if tokenizer_path:
        from asr.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_sentencepiece(Path(tokenizer_path).read_bytes())
    result = clean_cuts(open_cuts(cuts), rules, tokenizer=tokenizer, progress=True)
    result.write(out)
    report = result.report.to_dict()
    print(f"kept {report['kept']['total']}, dropped {report['dropped']['total']}, "
          f"turned into translation pairs {report['translated']['total']}, "
          f"kept with only their translation {report['translation_only']['total']}, "
          f"kept with their labels mended {report['repaired']['total']}, "
          f"left to the model to judge {report['deferred']['total']} -> {out}")
    evaluation = result.report.evaluation
    if evaluation:
        print(f"against the recorded truth: precision {format_ratio(evaluation['precision'])}, "
              f"recall {format_ratio(evaluation['recall'])} over {evaluation['n_corrupt']} corrupt of "
              f"{evaluation['n_cuts']} cuts")
        for kind, figures in sorted(evaluation["recall_by_kind"].items()):
            print(f"  {kind:12s} recall {format_ratio(figures['recall'])} ({figures['dropped']}/{figures['n']})")
        repaired = evaluation["repaired"]
        if repaired["n"]:
            print(f"  mended labels: {repaired['n']}, {repaired['corrupt']} of them wrong before, "
                  f"{repaired['mended']} now equal to the truth")
    print(f"report: {out / 'report.md'}")


def _shar(args) -> int:
    shards = export_shar(open_cuts(args.cuts), args.out, shard_size=args.shard_size)
    print(f"{len(shards['cuts'])} shards -> {args.out}")
    return 0


def _tokenizer(args) -> int:
    from asr.data.sequence import manifest_texts
    from asr.tokenizer import Tokenizer, train_sentencepiece

    model = train_sentencepiece(manifest_texts(open_cuts(p) for p in args.cuts), vocab_size=args.vocab_size,
                                model_type=args.model_type, doubled_letters=args.doubled_letters,
                                max_piece_length=args.max_piece_length, min_char_count=args.min_char_count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(model)
    print(f"{Tokenizer.from_sentencepiece(model).n_text} text pieces -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
