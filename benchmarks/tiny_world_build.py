"""Build the tiny world into a given cache and print its target's figures and the SHA-256 of
its weights, to check that the build is the same in every process and on every machine.

    python benchmarks/tiny_world_build.py --cache /tmp/tiny_a     # ~5 min on 2 cores

The build trains at a fixed thread count (tasks/tiny/prepare.py, BUILD_THREADS) whatever the
process ran before (harness/threads.py). Before that fix three builds from identical data
gave three targets (KnowMem_forget / Utility 79.1/91.3, 78.8/83.6, 79.7/87.8).
"""

from __future__ import annotations

import argparse
import hashlib
import os


def weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="a folder (the build goes to CACHE/muse_tiny)")
    parser.add_argument("--threads-before", type=int, default=0,
                        help="first compute at this many threads, as a test or library might (0: no)")
    args = parser.parse_args()
    os.environ["HARNESS_CACHE"] = args.cache
    import torch

    if args.threads_before:
        torch.set_num_threads(args.threads_before)
        (torch.randn(256, 256) @ torch.randn(256, 256)).sum()
    import tasks
    from harness.modeling import load_model, load_tokenizer
    from harness.threads import pin
    from tasks.evaluate import raw_metrics
    from tasks.tiny.prepare import prepare

    pin()
    task = tasks.get_task("muse_tiny")
    prepare(task, log=lambda _: None)
    target = load_model(task.target_model, device="cpu")
    scores = raw_metrics(target, load_tokenizer(task.tokenizer_path), task)
    print(f"target KnowMem_forget {scores['knowmem_f']:.1f} Utility {scores['knowmem_r']:.1f} "
          f"VerbMem_forget {scores['verbmem_f']:.2f}")
    print(f"target weights sha256 {weights_sha256(target)[:16]}, "
          f"retrain {weights_sha256(load_model(task.retrain_model, device='cpu'))[:16]}")


if __name__ == "__main__":
    main()
