"""Load (and write) MUSE data: a hub id or a local folder in the hub repository's own layout.

One call, ``datasets.load_dataset(path_or_id, config, split=split)``, serves both: a local
folder holds ``CONFIG/SPLIT-00000-of-00001.parquet`` files and a README.md whose YAML front
matter lists ``configs:`` with their ``data_files``, exactly as ``muse-bench/MUSE-News`` does.
Before loading a local folder we check its README ourselves, so that a missing config, split
or field is reported in one line that names it.

``datasets``, pyarrow and ``huggingface_hub`` are imported where they are used: ``tasks.spec``
imports this module, and loading a task needs none of them (tests also replace
``huggingface_hub.try_to_load_from_cache``, which is looked up at each call).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.yamlio import parse, read_text

# config -> split -> required fields (docs/design.md, "MUSE data")
MUSE_SCHEMA: dict[str, dict[str, tuple[str, ...]]] = {
    "knowmem": {
        "forget_qa": ("question", "answer"),
        "retain_qa": ("question", "answer"),
        "forget_qa_icl": ("question", "answer"),
        "retain_qa_icl": ("question", "answer"),
    },
    "verbmem": {"forget": ("prompt", "gt")},
    "privleak": {"forget": ("text",), "retain": ("text",), "holdout": ("text",)},
    "raw": {"forget": ("text",), "holdout": ("text",), "retain1": ("text",), "retain2": ("text",)},
}


def _is_local(dataset: str) -> bool:
    return Path(dataset).expanduser().exists() or dataset.startswith(("/", "./", "../", "~"))


def read_front_matter(folder: Path) -> dict[str, dict[str, str]]:
    """Parse README.md's ``configs:`` into ``{config: {split: relative_path}}``."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise HarnessError(f"{folder}: no README.md; a local MUSE folder needs the hub layout's README with 'configs:'")
    text = read_text(readme, "dataset README")
    parts = text.split("---")
    if not text.startswith("---") or len(parts) < 3:
        raise HarnessError(f"{readme}: no YAML front matter; it must start with '---' and list 'configs:'")
    meta = parse(parts[1], f"{readme} front matter") or {}
    example = "configs: [{config_name: knowmem, data_files: [{split: forget_qa, path: knowmem/forget_qa.parquet}]}]"
    out: dict[str, dict[str, str]] = {}
    try:
        for cfg in meta.get("configs", []):
            files = cfg.get("data_files", [])
            if isinstance(files, dict):
                files = [{"split": k, "path": v} for k, v in files.items()]
            out[str(cfg["config_name"])] = {str(f["split"]): str(f["path"]) for f in files}
    except (AttributeError, KeyError, TypeError) as exc:
        raise HarnessError(f"{readme}: malformed 'configs:' in the front matter ({type(exc).__name__}: {exc}); "
                           f"expected e.g. {example}") from exc
    return out


_STAMPS: dict[tuple, str] = {}


def dataset_stamp(dataset: str) -> str:
    """What identifies a dataset's content: for a local folder, a hash of every file's relative
    path and bytes (MUSE-size folders hash in well under a second; kept per process while no file
    changed); for a hub id, the id (the hub's datasets are versioned by their own revisions)."""
    folder = Path(dataset).expanduser()
    if not folder.is_dir():
        return f"hub:{dataset}"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _STAMPS:
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
        _STAMPS[key] = digest.hexdigest()[:16]
    return _STAMPS[key]


def training_texts(dataset: str, split: str) -> list[str]:
    """The documents of ``raw/<split>`` that unlearning trains on. An empty split is an error, not
    a silent run: it would train for 0 steps (forget) or without its retain term (retain1)."""
    texts = [r["text"] for r in load_split(dataset, "raw", split)]
    if not any(t.strip() for t in texts):
        raise HarnessError(f"dataset {dataset}: raw/{split} holds no text; unlearning needs at least one document there")
    return texts


def check_local(folder: Path, config: str, split: str) -> None:
    configs = read_front_matter(folder)
    if config not in configs:
        raise HarnessError(
            f"{folder}: dataset has no config '{config}' (found: {', '.join(configs) or 'none'}); add {config}/ and list it in README.md"
        )
    if split not in configs[config]:
        raise HarnessError(
            f"{folder}: config '{config}' has no split '{split}' (found: {', '.join(configs[config])}); add {config}/{split}-00000-of-00001.parquet"
        )
    path = configs[config][split]
    paths = [path] if isinstance(path, str) else list(path)
    for p in paths:
        if "*" not in p and not (folder / p).is_file():
            raise HarnessError(f"{folder}: config '{config}' split '{split}' lists {p}, which does not exist")


def load_split(dataset: str, config: str, split: str) -> list[dict[str, Any]]:
    """Rows of one MUSE split, with the schema's fields checked."""
    import datasets

    if config not in MUSE_SCHEMA or split not in MUSE_SCHEMA[config]:
        raise HarnessError(f"'{config}/{split}' is not a MUSE split; known: {describe_schema()}")
    local = _is_local(dataset)
    if local:
        folder = Path(dataset).expanduser()
        if not folder.is_dir():
            raise HarnessError(f"dataset folder {dataset} does not exist; pass a hub id or a folder in the MUSE hub layout")
        check_local(folder, config, split)
        dataset = str(folder)
    datasets.disable_progress_bars()
    # A local folder is re-read every time: datasets' cache is keyed by path, and a
    # re-prepared or edited folder would otherwise silently load stale rows.
    mode = "force_redownload" if local else None
    try:
        ds = datasets.load_dataset(dataset, config, split=split, download_mode=mode)
    except Exception as exc:  # datasets raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if local else " (no hub access? pass a local folder in the hub layout)"
        raise HarnessError(f"could not load {dataset} config '{config}' split '{split}': {first}{hint}") from exc
    missing = [f for f in MUSE_SCHEMA[config][split] if f not in ds.column_names]
    if missing:
        raise HarnessError(
            f"{dataset}: split '{config}/{split}' lacks field(s) {', '.join(missing)} (has: {', '.join(ds.column_names)})"
        )
    return [dict(row) for row in ds]


def describe_schema() -> str:
    return "; ".join(f"{c}: {', '.join(s)}" for c, s in MUSE_SCHEMA.items())


def write_muse_folder(root: str | Path, data: dict[str, dict[str, list[dict[str, Any]]]]) -> Path:
    """Write ``{config: {split: rows}}`` as a local folder in the MUSE hub layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    configs = []
    for config, splits in data.items():
        (root / config).mkdir(exist_ok=True)
        files = []
        for split, rows in splits.items():
            rel = f"{config}/{split}-00000-of-00001.parquet"
            columns = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
            pq.write_table(pa.table(columns), root / rel)
            files.append({"split": split, "path": rel})
        configs.append({"config_name": config, "data_files": files})
    front = yaml.safe_dump({"configs": configs}, sort_keys=False)
    (root / "README.md").write_text(f"---\n{front}---\n\nMUSE-format dataset written by quant-unlearn-harness.\n")
    return root


def model_stamp(path: str) -> str:
    """What identifies a model's weights: for a local folder, a hash of its files' names, sizes
    and modification times (hashing the bytes of a 7B model would cost half a minute per plan);
    for a hub id, the commit of the snapshot in the hub cache (``unresolved`` when it is not
    cached yet: the first run downloads it and the next plan sees the commit)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        parts = [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in sorted(folder.iterdir()) if p.is_file()]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    if folder.exists() or path.startswith(("/", "./", "../", "~")):
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # not a valid repo id, or no hub library: the id alone
        cached = None
    commit = Path(cached).parent.name if isinstance(cached, str) else "unresolved"
    return f"{path}@{commit}"
