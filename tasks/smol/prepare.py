"""Build the ``muse_smol`` world into the cache: a pretrained base fine-tuned into a target
(forget + retain) and a retrain model (retain only), on the tiny world's people in the MUSE layout.

    harness prepare muse_smol        # ~25 minutes on 2 CPU cores (docs/smol_world.md)

Resumable: the work happens in ``<root>.partial``; every finished part (data, target, retrain)
is kept there, so an interrupted prepare resumes at the model it was training. The finished
folder is renamed into place as the last act. The world's bar (the checks a usable MUSE world
must pass) is measured at the end, printed, and kept in ``prepare.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from harness.errors import HarnessError
from harness.model_sources import obtain_base, parse_spec, read_record
from harness.modeling import load_model, load_tokenizer
from harness.progress import training_bar
from harness.provenance import provenance
from harness.store import check_replaceable, folder_aside, replace_folder, write_json
from harness.training import encode
from tasks.data import write_muse_folder
from tasks.metrics import privleak
from tasks.reference import task_references
from tasks.tiny.train import fit
from tasks.tiny.world import muse_splits

WORLD_VERSION = 2  # bump when the world, the recipe or the base conversion changes
SEED = 0


@dataclass
class FineTuneConfig:
    """The one recipe target and retrain are fine-tuned with (AdamW, warm-up, cosine to 10%)."""

    epochs: int = 8
    lr: float = 1e-4
    warmup_steps: int = 10
    batch_size: int = 8
    max_length: int = 512
    seed: int = SEED
    group_by_length: bool = True  # documents (~245 tokens) and quiz sheets (~125) batched apart


RECIPE = FineTuneConfig()


def world_splits() -> dict:
    """The tiny world's people, documents and quiz sheets. The quiz sheets are needed here too:
    fine-tuned on the documents alone (bio + Q&A, 10 epochs), SmolLM2 reproduced them
    (VerbMem_forget 87) but answered MUSE's few-shot questions, which come without the
    biography before them, no better than the retrain model (KnowMem_forget 15 vs 14)."""
    return muse_splits(SEED)


def _stamp(base_record: dict) -> dict:
    """What the world's models depend on: the world, the recipe and the exact base (its source,
    file hash and dither); a change rebuilds, a match resumes."""
    return {"world_version": WORLD_VERSION, "seed": SEED, "recipe": asdict(RECIPE),
            "base": base_record.get("spec"), "base_conversion": base_record.get("conversion_version")}


def is_prepared(root: Path, stamp: dict | None = None) -> bool:
    path = root / "prepare.json"
    if not path.is_file():
        return False
    done = json.loads(path.read_text())
    if done.get("world_version") != WORLD_VERSION:
        return False
    return stamp is None or done.get("stamp") == stamp


def prepare(task, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build (or reuse, or resume) the world of ``task`` (its dataset's parent folder is the root)."""
    if not task.base_model:
        raise HarnessError(f"task '{task.task}' uses tasks.smol.prepare but declares no base_model")
    root = Path(task.dataset).parent
    for name, path in (("target_model", task.target_model), ("retrain_model", task.retrain_model)):
        expected = root / name.split("_")[0]
        if Path(path or "") != expected:
            raise HarnessError(f"task '{task.task}': {name} is {path}, but this prepare builds it at {expected}; "
                               f"set {name}: {expected} (the dataset's sibling folder)")
    check_replaceable(root, "prepare.json", "harness prepare")  # never a user's own folder
    spec = parse_spec(task.base_model)
    base = obtain_base(spec, log)
    stamp = _stamp(read_record(base) or {})
    if is_prepared(root, stamp) and not force:
        record = json.loads((root / "prepare.json").read_text())
        if "bar" not in record:  # built, but the bar's measurement was interrupted: measure it now
            record["bar"] = measure_bar(task, log)
            write_json(root / "prepare.json", record)
        return root
    t0 = time.perf_counter()
    partial = root.with_name(f"{root.name}.partial")
    progress_file = partial / "progress.json"
    done = json.loads(progress_file.read_text()) if progress_file.is_file() and not force else {}
    if done.get("stamp") != stamp:
        shutil.rmtree(partial, ignore_errors=True)
        done = {"stamp": stamp, "parts": {}}
    partial.mkdir(parents=True, exist_ok=True)

    def finished(part: str, record: dict) -> None:
        done["parts"][part] = record
        write_json(progress_file, done)

    splits = world_splits()
    if "data" not in done["parts"]:
        with folder_aside(partial / "data") as tmp:
            write_muse_folder(tmp, splits)
        finished("data", {"rows": sum(len(v) for c in splits.values() for v in c.values())})
        log(f"{task.task}: world written in the MUSE layout ({done['parts']['data']['rows']} rows)")
    else:
        log(f"{task.task}: resuming in {partial} (done: {', '.join(done['parts'])})")

    raw = splits["raw"]
    retain = [r["text"] for s in ("retain1", "retain2") for r in raw[s]]
    forget = [r["text"] for r in raw["forget"]]
    jobs = [(name, texts) for name, texts in (("target", forget + retain), ("retrain", retain))
            if name not in done["parts"]]
    _announce(jobs, base / "model", log)
    for name, texts in jobs:
        finished(name, _fine_tune(base / "model", texts, partial / name, f"{task.task} {name}"))
        log(f"{task.task} {name}: {done['parts'][name]['documents']} documents, "
            f"final loss {done['parts'][name]['epoch_losses'][-1]:.4f}, {done['parts'][name]['seconds']:.0f}s")

    record = {"world_version": WORLD_VERSION, "stamp": stamp, "seed": SEED, "recipe": asdict(RECIPE),
              "base_model": read_record(base), "training": {k: done["parts"][k] for k in ("target", "retrain")},
              "seconds": round(time.perf_counter() - t0, 1), "provenance": provenance()}
    write_json(partial / "prepare.json", record)
    progress_file.unlink()
    replace_folder(partial, root)
    record["bar"] = measure_bar(task, log)
    write_json(root / "prepare.json", record)
    return root



def _announce(jobs, base_model: Path, log) -> None:
    """Print what is about to be trained and how long it should take (measured rate on 2 cores)."""
    if not jobs:
        return
    tok = load_tokenizer(str(base_model))
    tokens = sum(len(s) for _, texts in jobs for s in encode(tok, texts, RECIPE.max_length)) * RECIPE.epochs
    # ~180 tokens/s for a forward+backward+AdamW step of a 135M model on 2 cores (measured)
    log(f"fine-tuning {' and '.join(n for n, _ in jobs)}: {tokens} tokens over {RECIPE.epochs} epochs, "
        f"about {tokens / 180 / 60:.0f} min on 2 CPU cores (the progress lines give the measured time left)")


def _fine_tune(base_model: Path, texts: list[str], out: Path, label: str, recipe: FineTuneConfig | None = None) -> dict:
    """Fine-tune the base on ``texts`` with ``recipe`` (default: the world's) and save it to ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    tok = load_tokenizer(str(base_model))
    model = load_model(str(base_model), device="cpu", dtype=torch.float32)
    recipe = recipe or RECIPE
    torch.manual_seed(recipe.seed)
    with training_bar(label) as on_step:
        log = fit(model, tok, texts, recipe, on_step=on_step, max_length=recipe.max_length)
    with folder_aside(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return log


# The bar a usable world passes (issue 13): the target knows its facts, the retrain model does
# not know the forget set's, and PrivLeak can tell them apart.
BAR = {"target_knowmem_f_min": 60.0, "target_utility_min": 60.0, "retrain_knowmem_f_max_share": 0.5,
       "target_privleak_max": -50.0, "retrain_auc_band": (0.35, 0.65)}


def measure_bar(task, log: Callable[[str], None] = print) -> dict:
    """Evaluate target and retrain (cached as the task's references) and check the bar."""
    refs = task_references(task)
    tgt, ret = refs["raw"]["target"], refs["raw"]["retrain"]
    auc_r = ret["privleak_auc"]
    checks = [
        ("target KnowMem_forget", tgt["knowmem_f"], f">= {BAR['target_knowmem_f_min']:g}",
         tgt["knowmem_f"] >= BAR["target_knowmem_f_min"]),
        ("target Utility (KnowMem_retain)", tgt["knowmem_r"], f">= {BAR['target_utility_min']:g}",
         tgt["knowmem_r"] >= BAR["target_utility_min"]),
        ("retrain KnowMem_forget", ret["knowmem_f"], f"<= {BAR['retrain_knowmem_f_max_share'] * tgt['knowmem_f']:.1f} "
         f"(half the target's)", ret["knowmem_f"] <= BAR["retrain_knowmem_f_max_share"] * tgt["knowmem_f"]),
        ("target PrivLeak", privleak(tgt["privleak_auc"], auc_r), f"<= {BAR['target_privleak_max']:g}",
         privleak(tgt["privleak_auc"], auc_r) <= BAR["target_privleak_max"]),
        ("retrain AUC", auc_r, "in [{:g}, {:g}]".format(*BAR["retrain_auc_band"]),
         BAR["retrain_auc_band"][0] <= auc_r <= BAR["retrain_auc_band"][1]),
        ("retrain Utility (KnowMem_retain)", ret["knowmem_r"], "(information)", True),
        ("target VerbMem_forget", tgt["verbmem_f"], "(information)", True),
    ]
    log(f"{task.task}: the world's bar")
    for name, value, rule, ok in checks:
        log(f"  {'pass' if ok else 'FAIL'}  {name:34s} {value:8.2f}  {rule}")
    passed = all(ok for *_, ok in checks)
    log(f"{task.task}: {'meets' if passed else 'does NOT meet'} the bar")
    return {"passed": passed, "checks": [{"name": n, "value": v, "rule": r, "ok": ok} for n, v, r, ok in checks]}
