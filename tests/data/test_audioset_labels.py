from sed.data.corpora.audioset import NUM_AUDIOSET_CLASSES, _rows, audioset_labels, audioset_mids


def test_table_has_527_rows_in_index_order():
    rows = _rows()
    assert len(rows) == NUM_AUDIOSET_CLASSES == 527
    assert [r[0] for r in rows] == list(range(527))
    assert len(audioset_labels()) == len(audioset_mids()) == 527
    assert len(set(audioset_mids())) == 527


def test_known_entries():
    names, mids = audioset_labels(), audioset_mids()
    assert (names[0], mids[0]) == ("Speech", "/m/09x0r")
    assert (names[1], mids[1]) == ("Male speech, man speaking", "/m/05zppz")
    assert (names[137], mids[137]) == ("Music", "/m/04rlf")
    assert (names[526], mids[526]) == ("Field recording", "/m/07hvw1")


def test_lists_are_fresh_copies():
    a = audioset_labels()
    a[0] = "changed"
    assert audioset_labels()[0] == "Speech"
