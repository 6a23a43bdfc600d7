"""A MUSE-format task, declared in YAML and validated on load (unknown keys are an error).

Example (``tasks/configs/muse_news.yaml``)::

    task: muse_news
    dataset: muse-bench/MUSE-News          # hub id or a local folder in the hub layout
    target_model: muse-bench/MUSE-News_target
    retrain_model: muse-bench/MUSE-News_retrain
    tokenizer: meta-llama/Llama-2-7b-hf
    reference_auc: 0.4772                  # AUC_retrain for PrivLeak

``{cache}`` in any path expands to the harness cache directory, and a relative path is
taken relative to the YAML file's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import build_config
from harness.errors import HarnessError
from harness.model_sources import parse_spec
from harness.paths import cache_dir
from harness.quantization import make_quantizer
from harness.yamlio import load_file
from quantizers.calibration import settings_for
from tasks.data import dataset_stamp, model_stamp


@dataclass
class GenerationSettings:
    """How the metrics generate and score (MUSE's defaults)."""

    verbmem_max_new_tokens: int = 128  # new tokens generated per VerbMem prompt
    verbmem_gt_max_tokens: int = 128  # ground truth truncated to this many tokens
    knowmem_max_new_tokens: int = 32
    knowmem_stop: list[str] = field(default_factory=lambda: ["\n\n", "\nQuestion", "Question:"])
    privleak_k: float = 0.4  # Min-k% Prob with k = 40%
    # longest sequence scored or fed to generation; "model": the model's own context length (MUSE
    # never truncates its PrivLeak texts, and MUSE-Books documents exceed 2048 tokens)
    max_length: int | str = 2048
    batch_size: int = 8
    # False: prompts are tokenized as MUSE does; True: whitespace token healing for byte-level
    # BPE tokenizers, whose words carry their leading space (harness/generation.py)
    heal_trailing_space: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.privleak_k <= 1:
            raise HarnessError(f"generation.privleak_k must be in (0, 1], got {self.privleak_k}")
        if self.max_length != "model" and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise HarnessError(f"generation.max_length must be a positive integer or 'model' (the model's context), "
                               f"got {self.max_length!r}")
        for name in ("verbmem_max_new_tokens", "verbmem_gt_max_tokens", "knowmem_max_new_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise HarnessError(f"generation.{name} must be a positive integer")


@dataclass
class TaskSpec:
    """Everything needed to evaluate (and unlearn on) one MUSE-format corpus."""

    task: str
    dataset: str
    target_model: str
    retrain_model: str | None = None
    tokenizer: str | None = None
    reference_auc: float | None = None
    description: str = ""
    version: int = 1
    prepare: str | None = None  # "module:function" that builds dataset and models (tiny world)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # unlearning defaults for this corpus: {full: {...}, lora: {...}, methods: {name: {full|lora: {...}}}}
    unlearning: dict[str, Any] = field(default_factory=dict)
    # calibration defaults for GPTQ/AWQ on this corpus: {source, samples, max_length, seed}
    calibration: dict[str, Any] = field(default_factory=dict)
    # quantizer defaults on this task's models, under any run's settings: {rtn4: {group_size: 64}}
    quantizers: dict[str, Any] = field(default_factory=dict)
    # the pretrained model its target and retrain are fine-tuned from (harness/model_sources.py)
    base_model: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the YAML file it came from

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = build_config(GenerationSettings, self.generation, f"{self.task}.generation")
        if self.retrain_model is None and self.reference_auc is None:
            raise HarnessError(
                f"task '{self.task}' needs either retrain_model or reference_auc (for PrivLeak); add one to its YAML"
            )
        if self.calibration:
            settings_for(self)  # unknown keys or bad values fail when the task is loaded
        if not isinstance(self.quantizers, dict) or not all(isinstance(v, dict) for v in self.quantizers.values()):
            raise HarnessError(f"task '{self.task}': quantizers must map quantizer names to settings, "
                               f"e.g. {{rtn4: {{group_size: 64}}}}")
        if self.quantizers:
            for name, settings in self.quantizers.items():
                if "quantizer" in settings:
                    raise HarnessError(f"task '{self.task}': quantizers.{name}: a task sets defaults of registered "
                                       f"quantizers; declare variants in an experiment file")
                make_quantizer(name, settings)  # unknown names or settings fail when the task is loaded
        if self.base_model:
            parse_spec(self.base_model)
        if self.reference_auc is not None and not 0 < float(self.reference_auc) < 1:
            raise HarnessError(f"task '{self.task}': reference_auc must be in (0, 1), got {self.reference_auc}")

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.target_model

    def model_path(self, name_or_path: str) -> str:
        """Resolve the aliases ``target`` and ``retrain`` to this task's models."""
        if name_or_path == "target":
            return self.target_model
        if name_or_path == "retrain":
            if not self.retrain_model:
                raise HarnessError(f"task '{self.task}' declares no retrain_model")
            return self.retrain_model
        return name_or_path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def eval_identity(self) -> dict[str, Any]:
        """What of this task an evaluation stage's result depends on: its version, the dataset's
        content, the tokenizer, the generation settings and the PrivLeak reference (the target
        and retrain models enter through their own stamps); not its unlearning defaults."""
        return {"task": self.task, "version": self.version, "dataset": dataset_stamp(self.dataset),
                "tokenizer": model_stamp(self.tokenizer_path), "generation": dataclasses.asdict(self.generation),
                "reference_auc": self.reference_auc}

    def train_identity(self) -> dict[str, Any]:
        """What of this task an unlearning stage's result depends on besides its resolved settings:
        its version, the dataset's content and the tokenizer; not other methods' defaults."""
        return {"task": self.task, "version": self.version, "dataset": dataset_stamp(self.dataset),
                "tokenizer": model_stamp(self.tokenizer_path)}

    def fingerprint(self) -> str:
        """A short hash of everything that changes evaluation results."""
        data = self.to_dict()
        data.pop("source", None)
        data.pop("description", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_yaml(cls, path: str | Path, cache: str | Path | None = None) -> "TaskSpec":
        path = Path(path)
        raw = load_file(path, "task YAML")
        if not isinstance(raw, dict) or "task" not in raw:
            raise HarnessError(f"{path}: a task YAML must be a mapping with a 'task' name")
        if cache is None:
            cache = cache_dir()
        for key in ("dataset", "target_model", "retrain_model", "tokenizer"):
            if isinstance(raw.get(key), str):
                raw[key] = _expand(raw[key], path.parent, Path(cache))
        raw["source"] = str(path)
        return build_config(cls, raw, str(path))


def _expand(value: str, base: Path, cache: Path) -> str:
    value = value.replace("{cache}", str(cache))
    if value.startswith(("./", "../")):
        return str((base / value).resolve())
    return value
