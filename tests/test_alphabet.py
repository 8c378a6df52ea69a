import unicodedata

import pytest

from htr_augment import Alphabet, AlphabetError


def test_built_from_labels_sorted_with_blank_at_zero():
    a = Alphabet.from_labels(["bac", "cab", "été"])
    assert a.chars == sorted(set("bacét"))
    assert len(a) == len(a.chars) + 1
    assert 0 not in a.encode("abc")
    assert a.encode("a") == [a.chars.index("a") + 1]


def test_nfc_normalised_in_and_out():
    decomposed = unicodedata.normalize("NFD", "é")
    assert len(decomposed) == 2
    a = Alphabet.from_labels([decomposed])
    assert a.chars == ["é"]
    assert a.encode(decomposed) == a.encode("é") == [1]


def test_encode_decode_round_trip_and_blank_skipped():
    a = Alphabet.from_labels(["Québec, 1608"])
    ids = a.encode("Québec")
    assert a.decode(ids) == "Québec"
    assert a.decode([0] + ids + [0]) == "Québec"
    with pytest.raises(ValueError, match="outside the alphabet"):
        a.decode([len(a)])


def test_unknown_character_error_names_char_and_sample():
    a = Alphabet.from_labels(["abc"])
    with pytest.raises(AlphabetError) as e:
        a.encode("abz€", sample="lines.tsv:7")
    msg = str(e.value)
    assert "'z'" in msg and "'€'" in msg and "U+20AC" in msg and "lines.tsv:7" in msg
    assert e.value.chars == ["z", "€"]


def test_json_round_trip_and_plain_text(tmp_path):
    a = Alphabet.from_labels(["Noël « là »"])
    a.save(tmp_path / "a.json")
    assert Alphabet.load(tmp_path / "a.json") == a
    (tmp_path / "a.txt").write_text("cba\n", encoding="utf-8")
    assert Alphabet.load(tmp_path / "a.txt").chars == ["a", "b", "c"]
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        Alphabet.load(tmp_path / "bad.json")


def test_rejects_duplicates_and_multichar_entries():
    with pytest.raises(ValueError, match="duplicate"):
        Alphabet(["a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        Alphabet(["ab"])
