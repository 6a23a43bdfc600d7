"""``harness run``: validate everything, plan the stage graph, run what is not done yet (locally
or on Ray), then write ``results.jsonl`` and the run summary.

Order of work: names and settings are validated and the plan is built first (a bad name, key,
setting, model path or dataset split stops the run before anything is written); then the run
folder is locked (``.lock``: one run per folder at a time) and claimed (it must be new, or hold
the same experiment, unless ``--overwrite``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import tasks as registered
from harness.errors import HarnessError
from harness.orchestration.plan import Plan, build_plan
from harness.orchestration.results import reuse_note, summarize, write_results
from harness.progress import RunProgress
from harness.store import LOCK_FILE, Store, check_replaceable, run_lock, write_json
from leaderboard import load, render
from leaderboard.answer import answer_lines
from tasks.data import training_texts
from tasks.evaluate import load_task_data

EXPERIMENT_FILE = "experiment.json"


def validate_inputs(plan: Plan) -> None:
    """Models (local folders, or hub ids in the hub cache or downloadable), tokenizer and dataset
    splits, checked before any work (tiny world prepared first). ``--dry-run`` skips this."""
    from harness.modeling import check_model_path, load_tokenizer  # lazy: torch, off `harness ls`'s path


    for task in plan.tasks.values():
        if task.prepare:  # the task as declared (the tiny world builds next to its own dataset)
            registered.prepare_task(registered.get_task(task.task))
        for key in ("target_model", "retrain_model"):
            try:
                if getattr(task, key):
                    check_model_path(getattr(task, key), hub=True)
            except HarnessError as exc:
                raise HarnessError(f"{task.task} {key}: {exc} (in an experiment: models.{task.task}.{key})") from exc
        load_tokenizer(task.tokenizer_path)
        load_task_data(task.dataset)
        for split in ("forget", "retain1"):
            training_texts(task.dataset, split)


def check_folder(root: Path, exp, overwrite: bool) -> None:
    """``root`` must be new, empty, or this experiment's run folder (any run's with --overwrite)."""
    marker = root / EXPERIMENT_FILE
    check_replaceable(root, EXPERIMENT_FILE, "harness run", ignore=(LOCK_FILE,))  # the lock is ours
    if marker.is_file():
        if not overwrite and json.loads(marker.read_text()).get("fingerprint") != exp.fingerprint():
            raise HarnessError(f"{root} holds a different experiment; pass --overwrite to replace it or "
                               f"another --out")


def claim_folder(root: Path, exp, overwrite: bool) -> None:
    """Make ``root`` this experiment's folder (under the run's lock): wiped first with --overwrite."""
    check_folder(root, exp, overwrite)
    if overwrite and root.exists():
        for child in root.iterdir():
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / EXPERIMENT_FILE, {"fingerprint": exp.fingerprint(), "experiment": exp.identity()})


def default_out(exp) -> str:
    return exp.out or f"runs/run-{exp.fingerprint()[:10]}"


def run(exp, dry_run: bool = False, overwrite: bool = False, include: list[str] | None = None,
        rank_quant: list[str] | None = None) -> int:
    plan = build_plan(exp)
    rows = {s.quant for s in plan.of_kind("evaluate")}
    unknown = [q for q in rank_quant or [] if q not in rows]
    if unknown:  # checked before any work, not after the grid
        raise HarnessError(f"--rank-quant {', '.join(unknown)}: not a quantizer of this run ({', '.join(sorted(rows))})")
    root = Path(default_out(exp))
    store = Store(root)
    if dry_run:
        _print_plan(plan, store, root)
        return 0
    validate_inputs(plan)
    # planned again: a world prepared just now (or a hub model fetched) was named by its path in the
    # plan above and is named by its content now; stages stored under the first names would be
    # recomputed by every later run of the same experiment
    plan = build_plan(exp)
    check_folder(root, exp, overwrite)  # before the lock creates the folder
    with run_lock(root):
        return _run_locked(plan, exp, store, root, overwrite, include, rank_quant)


def _run_locked(plan: Plan, exp, store: Store, root: Path, overwrite: bool, include: list[str] | None,
                rank_quant: list[str] | None) -> int:
    claim_folder(root, exp, overwrite)
    store.clear_temporary()
    t0 = time.perf_counter()
    todo = [s for s in plan.stages.values() if not store.is_complete(s.id)]
    note = reuse_note(plan, store)
    if note:
        print(note, file=sys.stderr, flush=True)
    with RunProgress(plan, store) as progress:
        if exp.executor == "ray":
            from harness.orchestration.ray_executor import run_ray  # lazy: Ray is an optional extra

            run_ray(plan, todo, exp, store, include or [], progress)
        else:
            run_local(plan, todo, exp, store, progress)
    rows = write_results(plan, store, exp, wall_seconds=time.perf_counter() - t0)
    code = summarize(rows, plan, store, root, time.perf_counter() - t0, exp)
    paths = render(root, rank_quant=rank_quant)
    print("\n".join(["", "The answer:"] + answer_lines(load(root))))
    print("leaderboard: " + ", ".join(str(p) for p in paths))
    return code


def run_local(plan: Plan, todo: list, exp, store: Store, progress) -> None:
    """Stages in order, in this process: each unlearning is followed by its evaluations, which
    take the unlearned weights from memory. A failed stage's dependants are skipped."""
    from harness.orchestration.stages import Worker  # lazy: it imports torch; `harness ls` imports this module

    worker = Worker(exp, plan.tasks, store, on_step=progress.on_step)
    pending = {s.id for s in todo}
    for stage in plan.stages.values():
        if stage.id not in pending:
            continue
        blocked = [d for d in stage.deps if not store.is_complete(d)]
        if blocked:
            progress.skipped(stage, f"dependency {blocked[0]} failed")
            continue
        progress.started(stage)
        try:
            record = worker.run(stage)
        except Exception as exc:  # isolated: recorded by the store, the grid goes on
            progress.failed(stage, f"{type(exc).__name__}: {exc}".splitlines()[0])
            continue
        progress.finished(stage, record)


def _print_plan(plan: Plan, store: Store, root: Path) -> None:
    counts = plan.counts()
    done = sum(store.is_complete(s) for s in plan.stages)
    print(f"plan for {root}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f"; {done} of {len(plan.stages)} stages already complete")
    if plan.reference is None:
        print("  reference: none (--reference none): no quantization gap, the score uses the first quantizer's target row")
    else:
        print(f"  reference: {plan.reference}" + (" (added: every cell is also evaluated there, for the quantization gap)"
                                              if plan.reference_added else ""))
    for task in plan.tasks:
        units = [s for s in plan.of_kind("unlearn") if s.task == task]
        evals = [s for s in plan.of_kind("evaluate") if s.task == task]
        print(f"  {task}: {len(units)} unlearning runs, {len(evals)} quantize-and-evaluate stages "
              f"({sum(1 for s in evals if s.model != 'unlearned')} baseline)")
    for cell in plan.skipped:
        print(f"  skipped {cell['task']} {cell['method']}/{cell['mode']} @ {cell['quant']}: {cell['reason']}")
