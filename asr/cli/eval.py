"""``asr-eval``: decode a CutSet with a checkpoint and score it; compare two evaluations.

    asr-eval --model runs/demo/model.pt --manifest manifests/demo/test_cuts.jsonl.gz --out eval/test \\
        [--tasks transcribe,translate,lid,nospeech,timestamps] [--run runs/demo]
    asr-eval compare eval/clean/metrics.json eval/weak/metrics.json   # + test-set intervals where
                                                                       # hyps.jsonl lies beside each

Writes ``hyps.jsonl``, ``metrics.json``, ``report.md`` and plots (per-language WER, the LID confusion
matrix, and the training curves of ``--run``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asr.checkpoint import CheckpointError, load
from asr.cli import boolean, default_device


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return _compare(argv[1:])
    parser = argparse.ArgumentParser(prog="asr-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint (asr-export's output)")
    parser.add_argument("--manifest", type=Path, required=True, help="a lhotse CutSet to decode and score")
    parser.add_argument("--tasks", default="transcribe,translate,lid,nospeech,timestamps")
    parser.add_argument("--out", type=Path, default=Path("eval"))
    parser.add_argument("--run", type=Path, help="a run folder whose training curves go into the report")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--beam_size", type=int, default=None, help="beams; default: greedy search")
    parser.add_argument("--ctc_weight", type=float, default=None,
                        help="joint CTC/attention decoding: the CTC head's weight in [0, 1) (translations: the "
                             "translation CTC branch's, where the model has one); default: "
                             "asr.decoding.ctc.DEFAULT_WEIGHT with a CTC head, else 0")
    parser.add_argument("--pieces", type=boolean, default=None, metavar="{true,false}",
                        help="long-form transcription (timestamps and long-form WER) cuts recordings at the CTC "
                             "head's pauses, as asr-transcribe --pieces True; default: with a CTC head")
    parser.add_argument("--group_by", metavar="KEY",
                        help="also score the WER per value of this key of the cuts' custom fields (a recording "
                             "condition, e.g. the demo corpus's noise)")
    parser.add_argument("--device", default=default_device())
    args = parser.parse_args(argv)

    from asr.data.dataset import open_cuts
    from asr.decoding import DecodingOptions
    from asr.decoding.ctc import default_weight
    from asr.decoding.transcribe import pieces_by_default
    from asr.evaluate.evaluate import evaluate_cuts
    from asr.evaluate.report import write_report

    try:
        model, tokenizer, config = load(args.model, device=args.device)
        if tokenizer is None:
            raise CheckpointError(f"{args.model}: an OpenAI checkpoint carries no tokenizer of this project")
        cuts = open_cuts(args.manifest)
        ctc_weight = default_weight(model) if args.ctc_weight is None else args.ctc_weight
        options = DecodingOptions(without_timestamps=True, beam_size=args.beam_size, ctc_weight=ctc_weight)
        trained_unpadded = config is not None and not config.features.pad_to_30s
        metrics, hyps = evaluate_cuts(model, tokenizer, cuts, args.tasks.split(","), args.batch_size, options,
                                      progress=True, mask_padding=trained_unpadded,
                                      pieces=pieces_by_default(model) if args.pieces is None else args.pieces,
                                      group_by=args.group_by)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"asr-eval: error: {e}", file=sys.stderr)
        return 2
    report = write_report(args.out, metrics, hyps, run_dir=args.run)
    print(report.read_text())
    print(f"report: {report}")
    return 1 if metrics.get("failed_cuts") else 0


def _compare(argv: list[str]) -> int:
    from asr.evaluate.compare import compare, format_table, headline_table, mean_metrics
    from asr.evaluate.significance import N_RESAMPLES, format_differences, load_hyps, paired_differences

    parser = argparse.ArgumentParser(
        prog="asr-eval compare",
        description="Two evaluations: every metric and its difference, then the headline figures. More: the "
                    "headline figures, one row per run. Name a run with NAME=PATH (default: its folder). "
                    "Several runs of one setting (seeds) make one row with NAME=PATH,PATH,...: each figure "
                    "their mean, with its range.")
    parser.add_argument("metrics", nargs="+", metavar="[NAME=]METRICS_JSON[,METRICS_JSON...]")
    parser.add_argument("--bootstrap", type=int, default=N_RESAMPLES, metavar="N",
                        help="where every run has its hyps.jsonl beside metrics.json: each row's BLEU and mean "
                             "WER minus the first row's, with a 95%% interval from N paired resamples of the "
                             "test cuts (asr.evaluate.significance; default %(default)s, 0: no such table)")
    args = parser.parse_args(argv)
    runs = []
    for item in args.metrics:
        name, _, joined = item.rpartition("=")
        paths = [Path(path) for path in joined.split(",")]
        group = []
        for path in paths:
            try:
                group.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                print(f"asr-eval compare: error: {path}: {e}", file=sys.stderr)
                return 2
        runs.append((name or paths[0].parent.name, group, paths))
    if len(runs) == 2:
        print(format_table(compare(mean_metrics(runs[0][1]), mean_metrics(runs[1][1]))))
    print(headline_table([(name, group) for name, group, _ in runs]))
    hyps_files = [[path.parent / "hyps.jsonl" for path in paths] for _, _, paths in runs]
    if args.bootstrap > 0 and len(runs) > 1:
        missing = [str(path) for group in hyps_files for path in group if not path.is_file()]
        if missing:
            print(f"no test-set intervals: no hyps.jsonl beside {', '.join(missing)}")
            return 0
        try:
            rows = [(name, [load_hyps(path) for path in group]) for (name, _, _), group in zip(runs, hyps_files)]
        except (OSError, ValueError) as e:
            print(f"asr-eval compare: error: {e}", file=sys.stderr)
            return 2
        print(f"Differences from the first row, with 95% intervals over {args.bootstrap} paired resamples of the "
              "test cuts (the test set's share of the uncertainty; the ranges above show the seeds'):\n")
        print(format_differences(paired_differences(rows, args.bootstrap), runs[0][0]))
    return 0




if __name__ == "__main__":
    sys.exit(main())
