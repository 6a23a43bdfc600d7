"""What each ``harness`` subcommand does (``cli.py`` parses the line and calls one of these).

Model loading, training and the task references (they import torch and transformers) are
imported inside the commands that need them: ``harness ls`` and ``--help`` import this module
and must stay instant and torch-free (``tests/test_registry.py`` checks it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import tasks
from harness.errors import HarnessError
from harness.inspection import inspect_update, print_report
from harness.orchestration.experiment import load_experiment
from harness.orchestration.runner import run
from harness.plugins import registry
from harness.progress import training_bar
from harness.provenance import provenance
from harness.quantization import make_quantizer, quantize_model
from harness.store import check_replaceable, folder_aside, write_json
from harness.yamlio import parse
from leaderboard import build, render
from leaderboard.answer import answer_lines
from quantizers.calibration import settings_for
from quantizers.mechanism import forget_texts
from tasks.data import training_texts
from tasks.evaluate import finish, load_task_data, raw_metrics

KINDS = ("methods", "quantizers", "tasks")


def _include(paths: list[str] | None) -> None:
    if paths:
        for folder in paths:
            tasks.include_path(folder)


def cmd_ls(args: argparse.Namespace) -> int:
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
    from harness.modeling import check_model_path, load_model, load_tokenizer
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

    return make_quantizer(args.quant, parse_set(args.set), task)


def _fresh_folder(path: str | None) -> Path | None:
    if path and Path(path).exists():
        raise HarnessError(f"{path} already exists; pick another --save-quantized folder")
    return Path(path) if path else None


def _calibration(args: argparse.Namespace, task=None):
    """The task's calibration defaults with ``--calibration`` / ``--calibration-samples`` on top."""
    return settings_for(task, {"source": args.calibration, "samples": args.calibration_samples})


def cmd_quantize(args: argparse.Namespace) -> int:
    from harness.modeling import check_model_path, load_model, load_tokenizer

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
    _include(args.include_path)
    flags = {"tasks": args.tasks, "methods": args.methods, "modes": args.modes, "quant": args.quant,
             "reference": args.reference, "out": args.out, "executor": args.executor,
             "ray_address": args.ray_address, "seed": args.seed, "dtype": args.dtype,
             "batch_size": args.batch_size, "save_quantized": True if args.save_quantized else None}
    exp = load_experiment(args.config, flags)
    rank = [q.strip() for q in args.rank_quant.split(",")] if args.rank_quant else None
    return run(exp, dry_run=args.dry_run, overwrite=args.overwrite, include=args.include_path, rank_quant=rank)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    rank = [q.strip() for q in args.rank_quant.split(",")] if args.rank_quant else None
    for path in render(args.run, formats, rank):
        print(f"wrote {path}")
    print("\n".join(answer_lines(build(args.run, rank))))
    return 0


def parse_set(items: list[str] | None) -> dict:
    """``--set lr=1e-4 --set epochs=3`` -> {"lr": 1e-4, "epochs": 3} (values parsed as YAML)."""

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-4")
        out[key.strip()] = parse(value, f"--set {item}")
    return out


def cmd_unlearn(args: argparse.Namespace) -> int:
    from harness.modeling import load_model, load_tokenizer
    from harness.unlearning import resolve_settings, save_unlearned, unlearn

    _include(args.include_path)
    task = tasks.get_task(args.task)
    settings = resolve_settings(task, args.method, args.mode, parse_set(args.set))
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

    stats = inspect_update(model, reference, tok, quantizer, task, _calibration(args, task), forget_texts(task))
    print_report(f"{args.model} against {args.against} @ {quantizer.name}", stats, args.layers)
    if args.output:
        record = {"model": path, "against": ref_path, "quantizer": quantizer.describe(None), "statistics": stats}
        write_json(Path(args.output), record)
        print(f"wrote {args.output}")
    return 0


def _print_metrics(task: str, model: str, m: dict) -> None:
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


