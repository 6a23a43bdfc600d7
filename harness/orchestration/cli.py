"""The ``harness`` command line.

    harness ls [methods|quantizers|tasks]
    harness prepare muse_tiny
    harness eval --task muse_tiny --model target [--quant gptq4] [--output metrics.json]
    harness quantize --model PATH --quant gptq4 [--task muse_tiny] [--output DIR]
    harness inspect MODEL --against target --quant rtn4 [--task muse_tiny] [--layers]
    harness run [--methods all] [--quant gptq4] [--config experiment.yaml] [--dry-run]
    harness leaderboard runs/NAME [--format json,md,html]

What each command does is in ``commands.py``; heavy libraries are imported inside the commands
that need them, so ``ls`` and ``--help`` are instant. A ``HarnessError`` prints as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import typing

from harness.errors import HarnessError
from harness.orchestration.commands import (KINDS, cmd_eval, cmd_inspect, cmd_leaderboard, cmd_ls, cmd_prepare,
                                            cmd_quantize, cmd_run, cmd_unlearn)
from harness.progress import quiet_third_party_bars
from harness.threads import pin, requested


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``error: ...``, exit 2), like every other input error."""

    def error(self, message: str) -> typing.NoReturn:
        raise HarnessError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Quantization-robust LLM unlearning benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)
    # options shared by several commands, declared once: task folders, and the dtype to compute in
    tasks_opt = argparse.ArgumentParser(add_help=False)
    tasks_opt.add_argument("--include-path", action="append", metavar="DIR",
                           help="folder of extra task YAML files (repeatable)")
    dtype_opt = argparse.ArgumentParser(add_help=False)
    dtype_opt.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"),
                           help="dtype models load in (default auto: bf16 on a GPU, fp32 on CPU; fp32 is MUSE's)")
    both = [tasks_opt, dtype_opt]

    p = sub.add_parser("ls", help="list registered methods, quantizers and tasks", parents=[tasks_opt])
    p.add_argument("kind", nargs="?", choices=KINDS)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("prepare", help="build a task's data and models (the tiny world) into the cache", parents=[tasks_opt])
    p.add_argument("task")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("eval", help="evaluate one model on one task", parents=both)
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True, help="a model folder, a hub id, or 'target' / 'retrain'")
    p.add_argument("--tokenizer", help="tokenizer folder or id (default: the model's, else the task's)")
    p.add_argument("--output", help="write the metrics, per-example logs and provenance as JSON")
    p.add_argument("--batch-size", type=_positive_int, help="generation batch size (default: the task's)")
    _quant_args(p, required=False)
    p.add_argument("--save-quantized", metavar="DIR", help="with --quant: also write the quantized checkpoint")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="quantize one model and save it in the library's deployable format", parents=both)
    p.add_argument("--model", required=True, help="a model folder, a hub id, or 'target' / 'retrain' (with --task)")
    p.add_argument("--task", help="task giving calibration text (GPTQ, AWQ) and the model aliases")
    p.add_argument("--tokenizer", help="tokenizer folder or id (default: the model's, else the task's)")
    p.add_argument("--output", help="output folder (default runs/quantize/MODEL-QUANT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _quant_args(p, required=True)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("inspect", help="how much of a model's update survives a quantizer (codes changed, update / step)", parents=both)
    p.add_argument("model", help="a model folder, a hub id, or 'target' / 'retrain'")
    p.add_argument("--against", default="target", help="the model the update is measured from (default target)")
    p.add_argument("--task", default="muse_tiny", help="task giving the aliases and calibration text (default muse_tiny)")
    p.add_argument("--tokenizer", help="tokenizer folder or id (default: the reference's, else the task's)")
    p.add_argument("--layers", action="store_true", help="one row per linear layer")
    p.add_argument("--output", help="write the statistics (per layer) as JSON")
    _quant_args(p, required=True)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("unlearn", help="unlearn a task's forget set from its target (full or LoRA)", parents=both)
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--mode", required=True, choices=("full", "lora"))
    p.add_argument("--output", help="output folder (default runs/unlearn/TASK-METHOD-MODE)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (lr, epochs, alpha, lora_r, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("run", help="the main job: unlearn x quantize x evaluate over a grid, resumable", parents=both)
    p.add_argument("--tasks", help="comma-separated task names (default muse_tiny)")
    p.add_argument("--methods", help="'all' (default) or comma-separated method names")
    p.add_argument("--modes", help="comma-separated: full,lora (default both)")
    p.add_argument("--quant", help="'all' (default) or comma-separated quantizer names")
    p.add_argument("--reference", help="the unquantized evaluation every cell also gets, for the quantization "
                                       "gap (default bf16; 'none' to opt out)")
    p.add_argument("--config", metavar="YAML", help="experiment file; flags override it")
    p.add_argument("--out", help="run folder (default runs/run-<experiment hash>)")
    p.add_argument("--executor", choices=("local", "ray"), help="where stages run (default local)")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--seed", type=int, help="seed of every unlearning run (default: each task's)")
    p.add_argument("--batch-size", type=_positive_int, help="evaluation batch size (default: the task's)")
    p.add_argument("--save-quantized", action="store_true", help="keep every quantized checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--overwrite", action="store_true", help="recompute everything in the run folder")
    p.add_argument("--rank-quant", help="quantizers the ranking takes the worst case over (default: the 4-bit ones)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="render a run's ranked leaderboard (JSON, Markdown, HTML, plots)")
    p.add_argument("run", help="a run folder written by `harness run`")
    p.add_argument("--format", default="json,md,html", help="comma-separated: json, md, html (default all)")
    p.add_argument("--rank-quant", help="quantizers the ranking takes the worst case over (default: the 4-bit ones)")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def _quant_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--quant", required=required, help="a registered quantizer (see `harness ls quantizers`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="quantizer setting, e.g. group_size=64")
    p.add_argument("--calibration", metavar="CONFIG/SPLIT", help="calibration text (default raw/retain1)")
    p.add_argument("--calibration-samples", type=_positive_int, metavar="N", help="calibration documents (default: the task's, else 128)")


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_bars()
    try:
        args = build_parser().parse_args(argv)
        if args.func in (cmd_prepare, cmd_eval, cmd_quantize, cmd_unlearn, cmd_inspect):
            pin()  # one explicit thread count: the same floats whatever ran before (harness/threads.py)
        elif args.func is cmd_run:
            requested()  # a bad HARNESS_THREADS fails before any work; the workers pin it
        if getattr(args, "dtype", None) and args.func is not cmd_run:  # run takes it through the experiment
            from harness.modeling import set_dtype  # lazy: torch; `ls` and `--help` stay instant

            set_dtype(args.dtype)
        return args.func(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
