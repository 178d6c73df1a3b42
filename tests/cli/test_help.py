"""sedkit's parsers: every numeric option of every verb has a stated range (an absurd value is one usage
line, exit 2, before any work), and ``--help`` shows what each option takes and its default."""

from __future__ import annotations

import argparse
import math

import pytest

from sed.cli.main import build_parser, main
from sed.cli.options import Bounded


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {verb: p for verb, p in sub.choices.items() if p.add_help}  # not the verbs with their own parser


#: numeric options whose range the verb checks: ``export --opset`` (what the installed torch exporter writes)
CHECKED_BY_THE_VERB = {("export", "--opset")}


def numeric_options():
    """(verb, option, its type) of every numeric option of every verb that is not a list of choices."""
    return [
        (verb, a.option_strings[0], a.type)
        for verb, p in verb_parsers().items()
        for a in p._actions
        if a.option_strings
        and not a.choices
        and (a.type in (int, float) or isinstance(a.type, Bounded))
        and (verb, a.option_strings[0]) not in CHECKED_BY_THE_VERB
    ]


def test_every_numeric_option_of_every_verb_has_a_stated_range():
    options = numeric_options()
    assert len(options) >= 30  # the verbs' counts, sizes, seconds, rates and seeds
    loose = [f"{verb} {opt}" for verb, opt, typ in options if not isinstance(typ, Bounded)]
    assert not loose, f"numeric options without a range: {loose}"
    for _, _, typ in options:
        assert math.isfinite(typ.high) and typ.low <= typ.high


def _absurd(typ: Bounded) -> list[str]:
    over = typ.high * 10 if typ.high else 1
    return [
        "nan",
        "inf",
        "-inf",
        "1e400",
        "1e305",
        repr(int(over) if typ.kind is int else over),
        repr(typ.low - 1),
        "x",
        "9" * 5000,
    ]


def test_absurd_numbers_are_one_usage_line_naming_the_option(capsys):
    parser = build_parser()  # what main() parses with
    for verb, opt, typ in numeric_options():
        for value in _absurd(typ):
            with pytest.raises(SystemExit) as e:
                parser.parse_args([verb, f"{opt}={value}"])
            err = capsys.readouterr().err
            assert e.value.code == 2, (verb, opt, value)
            assert len(err.splitlines()) == 1 and err.startswith(f"error: sedkit {verb}: argument {opt}"), err
            assert len(err) < 300 and typ.range in err and "Traceback" not in err


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--hop", "1e305", "0 < SECONDS <= 3600"),
        ("--window", "1e305", "0 < SECONDS <= 600"),
        ("--window", "1e7", "0 < SECONDS <= 600"),
        ("--channels", "1000000", "1 <= N <= 256"),
        ("--rate", "0", "1000 <= HZ <= 768000"),
        ("--top-k", "0", "1 <= N <= 10000"),
        ("--hop", "nan", "not finite"),
        ("--window", "-1", "0 < SECONDS"),
        ("--threads", "1.5", "not an integer"),
    ],
)
def test_stream_options_of_the_issue_are_usage_errors_before_loading_anything(option, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["stream", "--checkpoint", "does-not-matter.pt", option, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_other_usage_errors_of_argparse_are_one_line_too(capsys):
    for argv, expect in [
        (["classify", "a.wav", "--checkpoint", "m.pt", "--format", "xml"], "invalid choice: 'xml'"),
        (["stream"], "the following arguments are required: --checkpoint"),
        (["no-such-verb"], "invalid choice"),
        (["info", "--bogus\n\x1b[2J", "a.wav"], "\\x1b"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 1 and expect in err
        assert err.rstrip("\n").isprintable() and "--help" in err


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option in the help


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_verb(wide, capsys):
    out = _help([], capsys)
    for verb in [*verb_parsers(), "fit", "finetune", "kfold"]:
        assert f"    {verb} " in out or f"    {verb}\n" in out, verb
    assert "sedkit VERB --help" in out


def _entries(out: str) -> dict[str, str]:
    """Each option's entry of a help text (its lines joined), by each of its option strings."""
    entries, current = {}, None
    for line in out.splitlines():
        if line.startswith("  -"):
            current = [line]
            for opt in line.split("  ")[1].split(", "):
                entries[opt.split()[0]] = current
        elif current is not None and line.startswith("   "):
            current.append(line.strip())
        else:
            current = None
    return {opt: " ".join(lines) for opt, lines in entries.items()}


def test_stream_help_says_what_each_option_takes_and_its_default(wide, capsys):
    lines = _entries(_help(["stream"], capsys))
    assert (
        lines["--hop"].startswith("  --hop SECONDS ")
        and "(0 < SECONDS <= 3600; default: 0.5)" in lines["--hop"]
    )
    assert "--window SECONDS" in lines["--window"] and "0 < SECONDS <= 600" in lines["--window"]
    assert "--channels N" in lines["--channels"] and "1 <= N <= 256" in lines["--channels"]
    assert "--rate HZ" in lines["--rate"] and "1000 <= HZ <= 768000" in lines["--rate"]
    assert "--format {f32,s16}" in lines["--format"]
    assert "default: 5" in lines["--top-k"] and "default: auto" in lines["--device"]
    assert "default: fp32" in lines["--precision"] and "default: -" in lines["--input"]
    assert "(default: the model's; 1000 <= HZ <= 768000)" in lines["--rate"]  # one parenthesis
    assert (
        "default" not in lines["--single-label"] + lines["--timing"]
    )  # a flag's value is not a default to show


def test_every_verb_help_shows_each_default_and_range(wide, capsys):
    for verb, p in verb_parsers().items():
        entries = _entries(_help([verb], capsys))
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS:
                continue
            line = entries[a.option_strings[0]]
            flag = a.nargs == 0 and not isinstance(a, argparse.BooleanOptionalAction)
            if (
                a.default is not None
                and a.default is not False
                and a.default != argparse.SUPPRESS
                and not flag
            ):
                shown = " ".join(a.default) if isinstance(a.default, list) else str(a.default)
                assert f"default: {shown}" in line or f"default: {a.default}" in line, (verb, line)
                assert line.count("default") == 1, f"a default stated twice: {line}"
            if isinstance(a.type, Bounded):
                assert a.type.range in line, (verb, line)


def test_kfold_help_shows_its_defaults_too(wide, capsys):
    """kfold parses its own arguments (the rest go to LightningCLI) with the same parser class."""
    entries = _entries(_help(["kfold"], capsys))
    assert "{best,last}" in entries["--ckpt"] and "default: best" in entries["--ckpt"]
    assert "default: runs/kfold-<config name>" in entries["--root"]


@pytest.mark.parametrize("option", ["--device", "--precision", "--batch-size"])
def test_a_shared_option_has_one_default_in_every_verb(option):
    """--device, --precision and --batch-size are declared once (sed.cli.options): every verb that takes one
    has the same default (ensemble-eval's --device was cpu, the others' auto; issue 22)."""
    defaults = {
        verb: next(a.default for a in p._actions if option in a.option_strings)
        for verb, p in verb_parsers().items()
        if option in p._option_string_actions
    }
    assert len(defaults) >= (2 if option == "--precision" else 5), defaults
    assert set(defaults.values()) == {
        {"--device": "auto", "--precision": "fp32", "--batch-size": 8}[option]
    }, defaults
