"""DESED metadata readers: what they read, and every bad row as one line naming the table and line."""

from __future__ import annotations

import pytest

from sed.data.corpora.desed import (
    DESED_CLASSES,
    read_durations_tsv,
    read_strong_tsv,
    read_weak_tsv,
    unlabeled_files,
)
from sed.errors import DatasetError

STRONG = "filename\tonset\toffset\tevent_label\n"


def _write(tmp_path, text, name="meta.tsv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_strong_reads_events_sorted_and_empty_clips(tmp_path):
    path = _write(
        tmp_path,
        STRONG + "a.wav\t5.0\t7.5\tDog\n\nb.wav\t\t\t\na.wav\t0.25\t1\tSpeech\n",
    )
    assert read_strong_tsv(path) == {"a.wav": [(0.25, 1.0, "Speech"), (5.0, 7.5, "Dog")], "b.wav": []}


def test_strong_soft_scores_of_maestro(tmp_path):
    path = _write(
        tmp_path,
        "filename\tonset\toffset\tevent_label\tconfidence\nm.wav\t0.0\t2.0\tpeople talking\t0.6\n",
    )
    assert read_strong_tsv(path, labels=None, scores=True) == {"m.wav": [(0.0, 2.0, "people talking", 0.6)]}
    assert read_strong_tsv(path, labels=["people talking"]) == {"m.wav": [(0.0, 2.0, "people talking")]}
    plain = _write(tmp_path, STRONG + "a.wav\t1\t2\tCat\n", "plain.tsv")
    assert read_strong_tsv(plain, scores=True) == {"a.wav": [(1.0, 2.0, "Cat", 1.0)]}


def test_weak_and_durations(tmp_path):
    weak = _write(tmp_path, "filename\tevent_labels\nw.wav\tDog,Cat,Dog\nv.wav\t\n", "weak.tsv")
    assert read_weak_tsv(weak) == {"w.wav": ["Dog", "Cat"], "v.wav": []}
    dur = _write(tmp_path, "filename\tduration\nw.wav\t9.5\n", "dur.tsv")
    assert read_durations_tsv(dur) == {"w.wav": 9.5}


def test_audio_dir_and_unlabeled_folder(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    (audio / "a.wav").write_bytes(b"")
    (audio / "sub" / "b.flac").write_bytes(b"")
    (audio / "notes.txt").write_text("x")
    assert unlabeled_files(audio) == ["a.wav", "sub/b.flac"]
    path = _write(tmp_path, STRONG + "a.wav\t1\t2\tCat\nmissing.wav\t1\t2\tCat\n")
    with pytest.raises(DatasetError) as e:
        read_strong_tsv(path, audio_dir=audio)
    assert str(e.value) == f"{path}: line 3: audio file 'missing.wav' not found in {audio}"
    with pytest.raises(DatasetError, match="unlabelled audio folder not found"):
        unlabeled_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no audio"):
        unlabeled_files(tmp_path / "empty")


@pytest.mark.parametrize(
    "row,reason",
    [
        ("a.wav\t3\t2\tDog", "line 2: onset 3 is after offset 2"),
        ("a.wav\t-1\t2\tDog", "line 2: onset must be a finite time >= 0, got '-1'"),
        ("a.wav\t1\tnan\tDog", "line 2: offset must be a finite time >= 0, got 'nan'"),
        ("a.wav\t1\tinf\tDog", "line 2: offset must be a finite time >= 0, got 'inf'"),
        ("a.wav\tone\t2\tDog", "line 2: onset 'one' is not a number of seconds"),
        ("a.wav\t1\t2\tUnicorn", "line 2: label 'Unicorn' is not one of the 10 classes"),
        ("a.wav\t1\t2\t", "line 2: empty event label"),
        ("a.wav\t1\t2", "line 2: expected 4 tab-separated columns, got 3"),
        ("a.wav\t1\t2\tDog\textra", "line 2: expected 4 tab-separated columns, got 5"),
        ("\t1\t2\tDog", "line 2: empty filename"),
    ],
)
def test_strong_bad_rows_are_one_line(tmp_path, row, reason):
    path = _write(tmp_path, STRONG + row + "\n")
    with pytest.raises(DatasetError) as e:
        read_strong_tsv(path)
    assert str(e.value) == f"{path}: {reason}"


@pytest.mark.parametrize(
    "reader,text,reason",
    [
        (read_strong_tsv, "file\tonset\toffset\tlabel\n", "line 1: header 'file onset offset label' is not"),
        (read_strong_tsv, "", "line 1: header '' is not"),
        (read_weak_tsv, "filename\tevent_labels\na.wav\tDog,,Cat\n", "line 2: empty event label"),
        (read_weak_tsv, "filename\tevent_labels\na.wav\tHorse\n", "line 2: label 'Horse' is not one of"),
        (
            read_weak_tsv,
            "filename\tevent_labels\na.wav\tDog\na.wav\tCat\n",
            "line 3: 'a.wav' is listed twice",
        ),
        (read_weak_tsv, "filename\tevent_labels\na.wav\n", "line 2: expected 2 tab-separated columns, got 1"),
        (read_durations_tsv, "filename\tduration\na.wav\t0\n", "line 2: duration must be > 0, got '0'"),
        (read_durations_tsv, "filename\tduration\na.wav\tten\n", "line 2: duration 'ten' is not a number"),
        (
            lambda p: read_strong_tsv(p, scores=True),
            "filename\tonset\toffset\tevent_label\tconfidence\na.wav\t1\t2\tDog\t1.5\n",
            "line 2: confidence '1.5' is not in [0, 1]",
        ),
    ],
)
def test_other_bad_tables_are_one_line(tmp_path, reader, text, reason):
    path = _write(tmp_path, text)
    with pytest.raises(DatasetError) as e:
        reader(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message


def test_missing_table_and_bad_bytes(tmp_path):
    with pytest.raises(DatasetError, match="metadata table not found"):
        read_weak_tsv(tmp_path / "none.tsv")
    path = tmp_path / "bad.tsv"
    path.write_bytes(STRONG.encode() + b"a.wav\t1\t2\tD\xffog\n")
    with pytest.raises(DatasetError, match=r"line 2: not UTF-8"):
        read_strong_tsv(path)


def test_class_list():
    assert len(DESED_CLASSES) == 10 and DESED_CLASSES == sorted(DESED_CLASSES)
