"""Provenance: what every result records about the machine and code that computed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.provenance import cpu_identity, provenance


def test_provenance_names_code_libraries_and_cpu():
    prov = provenance(seed=3)
    assert prov["seed"] == 3 and prov["libraries"]["torch"] and prov["python"]
    assert set(prov["git"]) == {"commit", "dirty"}
    cpu = cpu_identity()
    assert cpu["kernels"]["torch"]  # the vector capability torch's kernels run with, on any OS


def test_provenance_names_the_cpu_kernels_that_ran():
    # torch's vector kernels follow ATEN_CPU_CAPABILITY; on one machine its AVX512 and AVX2 kernels
    # train the tiny world to different models (docs/design.md), so the provenance says which ran
    code = "import json; from harness.provenance import cpu_identity; print(json.dumps(cpu_identity()['kernels']))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    env.pop("MKL_CBWR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"torch": "DEFAULT", "ATEN_CPU_CAPABILITY": "default"}
