"""``run(capsys, *argv)``: ``sedkit ARGV`` in-process -> (exit code, stdout, stderr); argparse's refusals
(SystemExit) give their code too. The one helper the CLI tests call."""

from __future__ import annotations

from sed.cli.main import main


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's refusals
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
