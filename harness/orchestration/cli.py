"""The ``harness`` command line.

    harness ls [methods|quantizers|tasks]
    harness prepare muse_tiny
    harness eval --task muse_tiny --model target [--quant gptq4] [--output metrics.json]
    harness quantize --model PATH --quant gptq4 [--task muse_tiny] [--output DIR]
    harness inspect MODEL --against target --quant rtn4 [--task muse_tiny] [--layers]
    harness run [--methods all] [--quant gptq4] [--config experiment.yaml] [--dry-run]
    harness leaderboard runs/NAME [--format json,md,html]

Heavy libraries are imported inside the commands that need them, so ``ls`` and ``--help``
are instant. A ``HarnessError`` prints as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from harness.errors import HarnessError
from harness.store import check_replaceable, folder_aside, write_json

KINDS = ("methods", "quantizers", "tasks")


def _include(paths: list[str] | None) -> None:
    if paths:
        import tasks

        for folder in paths:
            tasks.include_path(folder)


def cmd_ls(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from harness.plugins import registry

    _include(args.include_path)
    console = Console()
    for kind in [args.kind] if args.kind else KINDS:
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("source", style="dim")
        entries = registry(kind).entries()
        for e in entries:
            table.add_row(escape(e.name), escape(e.summary), escape(e.source))  # names are text, not markup
        if not entries:
            table.add_row("-", f"no {kind} registered yet", "")
        console.print(table)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import tasks

    _include(args.include_path)
    task = tasks.get_task(args.task)
    if not task.prepare:
        print(f"{task.task}: nothing to prepare (its data and models are loaded from {task.dataset})")
        return 0
    tasks.prepare_task(task, force=args.force)
    print(f"{task.task}: ready (dataset {task.dataset}, target {task.target_model}, retrain {task.retrain_model})")
    return 0


def _ensure_ready(task) -> None:
    if task.prepare and not Path(task.dataset).exists():
        raise HarnessError(f"task '{task.task}' is not prepared yet; run `harness prepare {task.task}` first")


def _tokenizer_for(model_path: str, task) -> str:
    """The model's own tokenizer if its folder has one, else the task's."""
    if Path(model_path).is_dir() and any(Path(model_path).glob("tokenizer*.json")):
        return model_path
    return task.tokenizer_path


def cmd_eval(args: argparse.Namespace) -> int:
    import time

    import tasks
    from harness.modeling import check_model_path, load_model, load_tokenizer
    from harness.provenance import provenance
    from tasks.evaluate import finish, load_task_data, raw_metrics
    from tasks.reference import task_references

    _include(args.include_path)
    task = tasks.get_task(args.task)
    path = task.model_path(args.model)
    _ensure_ready(task)
    load_task_data(task.dataset)  # validates every split before any model is loaded
    check_model_path(path)
    quantizer = _quantizer(args, task)
    if args.save_quantized and quantizer is None:
        raise HarnessError("--save-quantized needs --quant NAME")
    _fresh_folder(args.save_quantized)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = load_tokenizer(args.tokenizer or _tokenizer_for(path, task))
    model = load_model(path)
    qrecord = None
    if quantizer is not None:
        from harness.quantization import quantize_model

        model, qrecord = quantize_model(quantizer, model, tok, task, _calibration(args, task),
                                        save_to=_fresh_folder(args.save_quantized))
    raw = raw_metrics(model, tok, task, args.batch_size, with_logs=bool(args.output))
    known = {}  # a model's own run doubles as the task's reference, unless it was quantized here
    if quantizer is None:
        known = {"target": raw} if path == task.target_model else {"retrain": raw} if path == task.retrain_model else {}
    refs = task_references(task, known=known, batch_size=args.batch_size)
    result = finish(raw, refs["auc_retrain"], refs["knowmem_f_target"])
    _print_metrics(task.task, args.model + (f" @ {quantizer.name}" if quantizer else ""), result)
    if args.output:
        record = {"task": task.to_dict(), "model": path, "quantization": qrecord, "metrics": result,
                  "references": {k: v for k, v in refs.items() if k != "raw"},
                  "seconds": round(time.perf_counter() - t0, 2), "provenance": provenance(seed=None)}
        write_json(Path(args.output), record)
        print(f"wrote {args.output}")
    return 0


def _quantizer(args: argparse.Namespace, task=None):
    """The quantizer named by ``--quant`` with its ``--set`` settings over the task's defaults
    (None without --quant)."""
    if not getattr(args, "quant", None):
        if getattr(args, "set", None):
            raise HarnessError("--set configures a quantizer here; add --quant NAME")
        return None
    from harness.quantization import make_quantizer

    return make_quantizer(args.quant, _parse_set(args.set), task)


def _fresh_folder(path: str | None) -> Path | None:
    if path and Path(path).exists():
        raise HarnessError(f"{path} already exists; pick another --save-quantized folder")
    return Path(path) if path else None


def _calibration(args: argparse.Namespace, task=None):
    """The task's calibration defaults with ``--calibration`` / ``--calibration-samples`` on top."""
    from quantizers.calibration import settings_for

    return settings_for(task, {"source": args.calibration, "samples": args.calibration_samples})


def cmd_quantize(args: argparse.Namespace) -> int:
    import time

    import tasks
    from harness.modeling import check_model_path, load_model, load_tokenizer
    from harness.provenance import provenance
    from harness.quantization import quantize_model

    _include(args.include_path)
    task = tasks.get_task(args.task) if args.task else None
    if task is None and args.model in ("target", "retrain"):
        raise HarnessError(f"--model {args.model} names a task's model; add --task T")
    path = task.model_path(args.model) if task else args.model
    quantizer = _quantizer(args, task)  # bad names and settings first, before anything is loaded
    calibration = _calibration(args, task)
    out = Path(args.output or f"runs/quantize/{Path(path).name}-{quantizer.name}")
    if out.exists() and not args.overwrite:
        raise HarnessError(f"{out} already exists; pass --overwrite to replace it or --output another folder")
    check_replaceable(out, "quantize.json", "harness quantize")
    if task is not None:
        _ensure_ready(task)
    check_model_path(path)
    t0 = time.perf_counter()
    tok = load_tokenizer(args.tokenizer or (_tokenizer_for(path, task) if task else path))
    model = load_model(path)
    with folder_aside(out) as tmp:  # the folder appears complete or not at all
        _, record = quantize_model(quantizer, model, tok, task, calibration, save_to=tmp)
        meta = {"model": path, "task": task.task if task else None, "quantization": record,
                "seconds": round(time.perf_counter() - t0, 2), "provenance": provenance(seed=None)}
        write_json(tmp / "quantize.json", meta)
    print(f"{quantizer.name}: quantized {path} in {record['seconds']:.1f}s; wrote {out} "
          f"(evaluate it with: harness eval --task {task.task if task else 'T'} --model {out})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.experiment import load_experiment
    from harness.runner import run

    _include(args.include_path)
    flags = {"tasks": args.tasks, "methods": args.methods, "modes": args.modes, "quant": args.quant,
             "reference": args.reference, "out": args.out, "executor": args.executor,
             "ray_address": args.ray_address, "seed": args.seed, "dtype": args.dtype,
             "batch_size": args.batch_size, "save_quantized": True if args.save_quantized else None}
    exp = load_experiment(args.config, flags)
    rank = [q.strip() for q in args.rank_quant.split(",")] if args.rank_quant else None
    return run(exp, dry_run=args.dry_run, overwrite=args.overwrite, include=args.include_path, rank_quant=rank)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard import build, render
    from leaderboard.answer import answer_lines

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    rank = [q.strip() for q in args.rank_quant.split(",")] if args.rank_quant else None
    for path in render(args.run, formats, rank):
        print(f"wrote {path}")
    print("\n".join(answer_lines(build(args.run, rank))))
    return 0


def _parse_set(items: list[str] | None) -> dict:
    """``--set lr=1e-4 --set epochs=3`` -> {"lr": 1e-4, "epochs": 3} (values parsed as YAML)."""
    from harness.yamlio import parse

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-4")
        out[key.strip()] = parse(value, f"--set {item}")
    return out


def cmd_unlearn(args: argparse.Namespace) -> int:
    import time

    import tasks
    from harness.modeling import load_model, load_tokenizer
    from harness.plugins import registry
    from harness.progress import training_bar
    from harness.provenance import provenance
    from harness.unlearning import resolve_settings, save_unlearned, unlearn
    from tasks.data import training_texts

    _include(args.include_path)
    task = tasks.get_task(args.task)
    settings = resolve_settings(task, args.method, args.mode, _parse_set(args.set))
    out = Path(args.output or f"runs/unlearn/{task.task}-{args.method}-{args.mode}")
    if out.exists() and not args.overwrite:
        raise HarnessError(f"{out} already exists; pass --overwrite to replace it or --output another folder")
    check_replaceable(out, "unlearn.json", "harness unlearn")
    _ensure_ready(task)
    forget = training_texts(task.dataset, "forget")
    method_cls = registry("methods").get(args.method)
    retain = training_texts(task.dataset, "retain1") if method_cls.needs_retain_set else None
    t0 = time.perf_counter()
    tok = load_tokenizer(task.tokenizer_path)
    model = load_model(task.target_model)
    with training_bar(f"{args.method}/{args.mode}") as on_step:
        model, log = unlearn(settings, model, tok, forget, retain, on_step)
    record = {"task": task.task, "target_model": task.target_model, "settings": settings.to_dict(),
              "training": log, "seconds": round(time.perf_counter() - t0, 2),
              "provenance": provenance(seed=settings.train.seed)}
    save_unlearned(out, model, tok, args.mode, record)
    last = log["log"][-1] if log["log"] else {}
    stop = log.get("early_stop")
    if stop and stop["stopped"]:
        print(f"stopped early: forget NLL {stop['checks'][-1][1]} reached stop_forget_nll={stop['bound']}")
    print(f"{args.method}/{args.mode}: {log['steps']} steps in {log['seconds']:.1f}s, final loss "
          f"{last.get('loss', float('nan')):.4f}; wrote {out}/model" + (f" and {out}/adapter" if args.mode == "lora" else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import tasks
    from harness.inspection import inspect_update, print_report
    from harness.modeling import check_model_path, load_model, load_tokenizer

    _include(args.include_path)
    task = tasks.get_task(args.task)
    _ensure_ready(task)
    path, ref_path = task.model_path(args.model), task.model_path(args.against)
    for p in (path, ref_path):
        check_model_path(p)
    quantizer = _quantizer(args, task)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(args.tokenizer or _tokenizer_for(ref_path, task))
    model, reference = load_model(path), load_model(ref_path)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    if shapes(model) != shapes(reference):
        raise HarnessError(f"{args.model} and {args.against} are not the same architecture; inspect compares "
                           f"an update of one model, e.g. an unlearned model --against target")
    from quantizers.mechanism import forget_texts

    stats = inspect_update(model, reference, tok, quantizer, task, _calibration(args, task), forget_texts(task))
    print_report(f"{args.model} against {args.against} @ {quantizer.name}", stats, args.layers)
    if args.output:
        record = {"model": path, "against": ref_path, "quantizer": quantizer.describe(None), "statistics": stats}
        write_json(Path(args.output), record)
        print(f"wrote {args.output}")
    return 0


def _print_metrics(task: str, model: str, m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    table = Table(title=escape(f"{task} · {model}"), title_justify="left")
    for col in ("metric", "value", "good when"):
        table.add_column(col, justify="right" if col == "value" else "left")
    rows = [("VerbMem_forget", m["verbmem_f"], "low (forgotten)"),
            ("KnowMem_forget", m["knowmem_f"], "low (forgotten)"),
            ("Utility (KnowMem_retain)", m["knowmem_r"], "high"),
            ("PrivLeak", m["privleak"], "near 0"),
            ("Knowledge retained %", m["knowledge_retained"], "low")]
    for name, value, good in rows:
        table.add_row(name, "-" if value is None else f"{value:.2f}", good)
    Console().print(table)


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
    from harness.progress import quiet_third_party_bars

    quiet_third_party_bars()
    try:
        args = build_parser().parse_args(argv)
        if args.func in (cmd_prepare, cmd_eval, cmd_quantize, cmd_unlearn, cmd_inspect):
            from harness.threads import pin

            pin()  # one explicit thread count: the same floats whatever ran before (harness/threads.py)
        elif args.func is cmd_run:
            from harness.threads import requested

            requested()  # a bad HARNESS_THREADS fails before any work; the workers pin it
        if getattr(args, "dtype", None) and args.func is not cmd_run:  # run takes it through the experiment
            from harness.modeling import set_dtype

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
