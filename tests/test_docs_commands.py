"""The commands of README.md and recipes/*/README.md, as written (issue 23: examples that could not work).

Every ```bash block is read; the cheap commands (:data:`CHEAP`: synthetic data, file information,
features, the model catalogue, help) run in order in one temporary folder and must exit 0; the
expensive ones (trainings, downloads, whole corpora, devices) are not run, but every model file an
example reads (``--checkpoint NAME.pt``) must be written by an earlier example (``--out NAME.pt``).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "recipes").glob("*/README.md"))]

#: the commands cheap enough to run here (seconds each): their first words
CHEAP = ("sedkit synth esc50 ", "sedkit info work/esc50", "sedkit features work/esc50/audio --kind fbank --out",
         "sedkit models", "sedkit --help")


def commands(path: Path) -> list[str]:
    """The commands of a file's bash blocks: continuation lines joined, trailing comments removed."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            cmd = re.split(r"\s{2,}#|^#", cmd, maxsplit=1)[0].strip()
            if cmd:
                out.append(cmd)
    return out


ALL = [(p.relative_to(REPO).as_posix(), c) for p in DOCS for c in commands(p)]


def test_the_documents_have_commands_and_cheap_ones():
    assert len(ALL) > 50
    assert sum(c.startswith(CHEAP) for _, c in ALL) >= 5


def test_every_model_file_an_example_reads_an_earlier_example_writes():
    written = set()
    for doc, cmd in ALL:
        # sed's own model files; a publisher's release file (BEATs_iter3_..._cpt2.pt) is a download
        for name in re.findall(r"--checkpoint ([a-z0-9_./-]+\.(?:pt|safetensors))(?:\s|$)", cmd):
            assert name in written, f"{doc}: `{cmd}` reads {name}, which no earlier example writes"
        written.update(re.findall(r"--out (\S+)", cmd))


def test_cheap_documented_commands_run_as_written(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sedkit").write_text(f"#!/bin/sh\nexec {sys.executable} -m sed \"$@\"\n")
    (bin_dir / "sedkit").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    ran = 0
    for doc, cmd in ALL:
        if not cmd.startswith(CHEAP):
            continue
        out = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{doc}: `{cmd}` exited {out.returncode}: {out.stderr[-500:]}"
        ran += 1
    assert ran >= 5
