"""The commands of README.md, docs/*.md and recipes/*/README.md, as written (issue 23: examples that could not
work), and the documents' shape (issue 22): a short README whose verb table, like docs/index.md, names every
verb of ``sedkit --help``, and relative links that lead somewhere.

Every ```bash block is read, the docs pages in docs/index.md's reading order; the cheap commands
(:data:`CHEAP`: synthetic data, file information, features, the model catalogue, help) run in order in one
temporary folder and must exit 0; the expensive ones (trainings, downloads, whole corpora, devices) are not
run, but every model file an example reads (``--checkpoint NAME.pt``) must be written by an earlier example
(``--out NAME.pt``).
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from sed.cli.main import VERB_GROUPS, build_parser

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "docs" / "index.md"
#: docs/index.md's numbered list: the pages in reading order
PAGES = [
    REPO / "docs" / name
    for name in re.findall(r"^\d+\. \[[^]]+\]\(([\w-]+\.md)\)", INDEX.read_text(encoding="utf-8"), flags=re.M)
]
DOCS = [REPO / "README.md", INDEX, *PAGES, *sorted((REPO / "recipes").glob("*/README.md"))]
README_MAX_LINES = 260

#: the commands cheap enough to run here (seconds each): their first words
CHEAP = (
    "sedkit synth esc50 ",
    "sedkit info work/esc50",
    "sedkit features work/esc50/audio --kind fbank --out",
    "sedkit models",
    "sedkit --help",
)


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
    (bin_dir / "sedkit").write_text(f'#!/bin/sh\nexec {sys.executable} -m sed "$@"\n')
    (bin_dir / "sedkit").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    ran = 0
    for doc, cmd in ALL:
        if not cmd.startswith(CHEAP):
            continue
        out = subprocess.run(
            ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, f"{doc}: `{cmd}` exited {out.returncode}: {out.stderr[-500:]}"
        ran += 1
    assert ran >= 5


def verbs() -> set[str]:
    """The verbs `sedkit --help` lists (the parser's sub-commands)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_docs_page_is_in_the_index_reading_order():
    assert (
        sorted(PAGES) == sorted(set(PAGES)) == sorted(p for p in (REPO / "docs").glob("*.md") if p != INDEX)
    )
    assert len(PAGES) >= 8


def test_the_readme_is_short_and_keeps_the_test_command():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert "python -m pytest -x -q" in lines  # the line .ci/run runs
    assert (
        'pip install -e ".[dev]" && sedkit demo --workdir work/demo' in lines
    )  # installs and runs the main job


def readme_table() -> dict[str, str]:
    """README's verb table: verb -> its one example."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return dict(
        re.findall(
            r"^\| \[`([\w-]+)`\]\(docs/cli\.md#[\w-]+\) \|[^|]+\| `(sedkit \1 [^`]+)` \|$", readme, flags=re.M
        )
    )


def test_the_readme_verb_table_and_the_docs_index_name_every_verb():
    table = set(readme_table())
    index = set(re.findall(r"^\| `sedkit ([\w-]+)` \|", INDEX.read_text(encoding="utf-8"), flags=re.M))
    assert len(verbs()) >= 20
    assert table == verbs(), (
        f"README's verb table (one example each) differs from `sedkit --help`: {table ^ verbs()}"
    )
    assert index == verbs(), f"docs/index.md differs from `sedkit --help`: {index ^ verbs()}"


def test_the_readme_verb_examples_parse():
    """Each example of README's verb table is a valid command line for its verb (LightningCLI's verbs: a
    config)."""
    raw = {verb for group in VERB_GROUPS for verb in getattr(group, "RAW_VERBS", {})}
    parsed = 0
    for verb, example in readme_table().items():
        argv = shlex.split(example)[1:]
        if verb in raw:
            assert "--config" in argv, f"README: `{example}` names no config"
            continue
        args = build_parser().parse_args(argv)  # a usage error exits 2 and fails the test
        assert args.verb == verb
        parsed += 1
    assert parsed == len(verbs() - raw)


#: a fenced block (its lines are code, not headings or links)
FENCED = re.compile(r"^```.*?^```", flags=re.M | re.S)


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCED.sub("", path.read_text(encoding="utf-8"))
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_relative_link_of_the_documents_leads_somewhere():
    checked = 0
    for doc in [*DOCS, REPO / "data" / "README.md"]:
        text = FENCED.sub("", doc.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?:", target):
                continue
            path, _, frag = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.relative_to(REPO)}: link {target} leads nowhere"
            assert not frag or frag in anchors(dest), (
                f"{doc.relative_to(REPO)}: no heading #{frag} in {path or doc.name}"
            )
            checked += 1
    assert checked > 50
