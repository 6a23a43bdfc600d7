"""The one folder write (``folder_aside``) and the one thread count (``harness.threads``): a
folder appears whole or not at all, leftovers of dead processes go, and a result does not depend
on what the process computed before."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.store import clear_dead_temporaries, folder_aside, temporary


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_folder_is_replaced_whole_or_left_as_it_was(tmp_path):
    final = tmp_path / "out"
    with folder_aside(final) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (final / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with folder_aside(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash while building")
    assert (final / "a.txt").read_text() == "first"  # the old folder, untouched
    with folder_aside(final) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left anywhere


def test_leftovers_of_dead_processes_go_and_a_living_writers_stay(tmp_path):
    final = tmp_path / "out"
    dead = final.with_name(f".out.tmp-{_dead_pid()}-0000abcd")
    living = temporary(final)  # this process's: a concurrent writer
    other = tmp_path / f".other.tmp-{_dead_pid()}-0000abcd"
    for folder in (dead, living, other):
        folder.mkdir()
    with folder_aside(final):
        pass
    assert not dead.exists() and living.exists() and other.exists()  # only out's own leftovers
    clear_dead_temporaries(tmp_path)
    assert not other.exists() and living.exists()


def _unlearn_code(before: str, out) -> str:
    """``harness unlearn`` in a fresh process that first ran ``before`` (what a test or a library
    may do to the thread count)."""
    return (f"import torch\n{before}\nfrom harness.orchestration.cli import main\n"
            "raise SystemExit(main(['unlearn', '--task', 'muse_tiny', '--method', 'ga_gdr', '--mode', 'full', "
            f"'--set', 'epochs=2', '--output', {str(out)!r}]))")


def test_results_do_not_depend_on_what_ran_before_in_the_process(tiny_task, tmp_path):
    """Measured before harness/threads.py: a process that had set its thread count (to the
    default count, even) trained the tiny world to other weights than one that had not."""
    import torch

    from harness.modeling import load_model

    count = torch.get_num_threads()
    digests = []
    for i, before in enumerate(["pass", f"torch.set_num_threads(1); torch.randn(64, 64).sum(); torch.set_num_threads({count})"]):
        out = tmp_path / f"u{i}"
        done = subprocess.run([sys.executable, "-c", _unlearn_code(before, out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        state = load_model(str(out / "model"), device="cpu").state_dict()
        digests.append(hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest())
    assert digests[0] == digests[1]


def test_a_bad_thread_count_is_one_line(monkeypatch):
    from harness.orchestration.cli import main

    monkeypatch.setenv("HARNESS_THREADS", "two")
    with pytest.raises(HarnessError, match="HARNESS_THREADS='two': give a whole number"):
        from harness.threads import requested

        requested()
    assert main(["run", "--methods", "ga", "--modes", "full", "--quant", "bf16", "--dry-run"]) == 2
