"""``--executor ray``: every stage is a Ray task, with its upstream stage as a dependency and
its resource needs (a GPU for unlearning and evaluation when the machine has one), on an
existing cluster (``--ray-address``) or a local one. Each worker process keeps one ``Worker``,
so models it needs repeatedly are loaded once. The run folder must be a path every worker
sees (a shared filesystem on a cluster); stages commit into it exactly as locally, so a Ray
run and a local run resume each other. Ray is the optional extra ``[ray]``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import tasks
from harness.errors import HarnessError
from harness.orchestration.experiment import Experiment, task_for
from harness.orchestration.plan import Stage
from harness.orchestration.stages import Worker
from harness.store import Store
from harness.threads import pin

_workers: dict[str, Any] = {}  # per worker process: run folder -> Worker


def _worker(context: dict[str, Any]):
    key = context["root"]
    if key not in _workers:
        if context["include"]:
            for folder in context["include"]:
                tasks.include_path(folder)
        exp = Experiment(**context["experiment"])
        _workers[key] = Worker(exp, {t: task_for(exp, t) for t in exp.tasks}, Store(key))
    return _workers[key]


def run_stage(stage_dict: dict[str, Any], context: dict[str, Any], *upstream: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: run one stage unless an upstream stage did not succeed."""
    os.environ["HARNESS_THREADS"] = str(context["threads"])  # as many as the task reserved (Ray sets 1 otherwise)
    pin()
    stage = Stage(**stage_dict)
    for up in upstream:
        if up["status"] != "done":
            return {"id": stage.id, "status": "skipped", "error": f"dependency {up['id']} {up['status']}"}
    try:
        record = _worker(context).run(stage)
    except Exception as exc:  # recorded in the store; reported to the driver
        return {"id": stage.id, "status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"id": stage.id, "status": "done", "record": record}


SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")


def worker_env(environ) -> dict[str, str]:
    """The variables the workers need (cache, hub mode, library switches), never a credential:
    Ray keeps a runtime env in its control store and shows it in its dashboard and logs."""
    keep = ("HARNESS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
    return {k: v for k, v in environ.items()
            if k.startswith(keep) and not set(k.upper().split("_")) & set(SECRET_WORDS)}


def check_capacity(nodes: list[dict], threads: int, gpu: bool) -> None:
    """A stage reserves ``threads`` CPUs (and a GPU when it needs one); a cluster whose largest
    node has fewer would leave it pending for ever: say so before submitting anything."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    cpus = max((r.get("CPU", 0) for r in alive), default=0)
    if cpus < threads:
        raise HarnessError(f"each stage reserves {threads} CPUs (this process's torch threads) but the largest Ray "
                           f"node has {cpus:g}; set OMP_NUM_THREADS={int(cpus) or 1} before `harness run`, or add a larger node")
    if gpu and not any(r.get("GPU", 0) >= 1 for r in alive):
        raise HarnessError("the stages need a GPU (this machine has one) but no Ray node offers one; "
                           "add a GPU node or run with --executor local")


def _death(exc: Exception) -> str:
    name = type(exc).__name__
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"Ray worker lost ({name}{': ' + cause if cause else ''}); the stage did not finish"


def run_ray(plan, todo: list, exp, store, include: list[str], progress) -> None:
    try:
        import ray
    except ImportError as exc:
        raise HarnessError("--executor ray needs Ray; install it with: pip install -e '.[ray]'") from exc
    env = worker_env(os.environ)
    try:
        ray.init(address=exp.ray_address, ignore_reinit_error=True, include_dashboard=False,
                 runtime_env={"env_vars": env}, log_to_driver=False)
    except Exception as exc:
        raise HarnessError(f"could not start or reach Ray ({exp.ray_address or 'local'}): "
                           f"{str(exc).splitlines()[0]}") from exc

    # Each stage reserves as many CPUs as this process computes with, and uses them all: CPU
    # results then match the local executor's bit for bit (float sums depend on threads).
    threads = pin()
    check_capacity(ray.nodes(), threads, any(s.needs_gpu for s in todo))
    context = {"root": str(Path(store.root).resolve()), "experiment": dataclasses.asdict(exp),
               "include": [str(Path(p).resolve()) for p in include], "threads": threads}
    remote = ray.remote(max_retries=0)(run_stage)
    refs: dict[str, Any] = {}
    todo_ids = {s.id for s in todo}
    for stage in plan.stages.values():  # plan order is topological: upstream stages come first
        if stage.id not in todo_ids:
            continue
        deps = [refs[d] for d in stage.deps if d in refs]
        options = {"num_cpus": threads, "num_gpus": 1 if stage.needs_gpu else 0}
        refs[stage.id] = remote.options(**options).remote(stage.to_dict(), context, *deps)
    waiting = {ref: plan.stages[sid] for sid, ref in refs.items()}
    while waiting:
        ready, _ = ray.wait(list(waiting), num_returns=1)
        stage = waiting.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except Exception as exc:  # the worker died (OOM kill, segfault) or an upstream one did
            out = {"status": "failed", "error": _death(exc)}
            store.record_failure(stage.id, {"kind": stage.kind, "label": stage.label, "config": stage.config},
                                 out["error"])
        if out["status"] == "done":
            progress.finished(stage, out["record"])
        elif out["status"] == "failed":
            progress.failed(stage, out["error"])
        else:
            progress.skipped(stage, out["error"])
