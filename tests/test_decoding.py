"""Greedy and prefix beam search CTC decoding, with and without a lexicon."""
import math

import numpy as np
import pytest
import torch

from htr_augment.alphabet import Alphabet
from recognizer.beam_search import Lexicon, beam_decode, ctc_decode, prefix_beam_search
from recognizer.decoding import greedy_decode


def posterior(frames: list[dict[str, float]], alphabet: Alphabet) -> np.ndarray:
    """(T, C) log-probabilities; each frame lists character probabilities, the rest goes to the blank."""
    out = np.full((len(frames), len(alphabet)), 1e-6)
    for t, probs in enumerate(frames):
        for ch, p in probs.items():
            out[t, alphabet.encode(ch)[0]] = p
        out[t, 0] = max(1e-6, 1 - sum(probs.values()))
    return np.log(out / out.sum(1, keepdims=True))


def batch(*posteriors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, C) posteriors into (T, B, C) and lengths, padding with blanks."""
    T = max(len(p) for p in posteriors)
    out = np.full((T, len(posteriors), posteriors[0].shape[1]), -30.0)
    out[:, :, 0] = 0.0
    for b, p in enumerate(posteriors):
        out[: len(p), b] = p
    return torch.tensor(out, dtype=torch.float32), torch.tensor([len(p) for p in posteriors])


def test_greedy_collapses_repeats_then_drops_blanks():
    ab = Alphabet("ab")
    lp, lengths = batch(posterior([{"a": 0.9}, {"a": 0.9}, {}, {"a": 0.9}, {"b": 0.9}], ab),
                        posterior([{"b": 0.9}, {}], ab))
    assert greedy_decode(lp, lengths, ab) == ["aab", "b"]


def test_width_one_beam_equals_greedy_on_peaked_posteriors():
    rng = np.random.default_rng(0)
    alphabet = Alphabet("abcde ")
    logits = rng.normal(size=(40, 8, len(alphabet)))
    logits[np.arange(40)[:, None], np.arange(8)[None, :], rng.integers(0, len(alphabet), (40, 8))] += 8.0
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float32), -1)
    lengths = torch.tensor([40, 35, 30, 25, 20, 15, 10, 5])
    assert beam_decode(lp, lengths, alphabet, beam_width=1) == greedy_decode(lp, lengths, alphabet)


def test_beam_finds_the_label_that_path_collapsing_misses():
    # Each frame: blank 0.6, "a" 0.4. Best path "--" -> "" (0.36), but P("a") = 0.16 + 0.24 + 0.24 = 0.64.
    a = Alphabet("a")
    lp = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(*batch(lp), a) == [""]
    best = prefix_beam_search(lp, beam_width=4)
    assert best[0][0] == (1,) and best[0][1] == pytest.approx(math.log(0.64))
    assert best[1][0] == () and best[1][1] == pytest.approx(math.log(0.36))
    assert ctc_decode(*batch(lp), a, beam_width=4) == ["a"]


def test_lexicon_turns_a_non_word_into_the_right_word():
    alphabet = Alphabet("acdgot")
    lp = posterior([{"c": 0.9}, {"o": 0.5, "a": 0.4}, {}, {"t": 0.9}], alphabet)
    assert greedy_decode(*batch(lp), alphabet) == ["cot"]
    assert ctc_decode(*batch(lp), alphabet, beam_width=8) == ["cot"]  # more likely, but not a word
    lexicon = Lexicon(["cat", "dog"], alphabet)
    assert ctc_decode(*batch(lp), alphabet, beam_width=8, lexicon=lexicon) == ["cat"]


def test_lexicon_on_lines_checks_every_word_and_spaces_only_after_words():
    alphabet = Alphabet("acehilnt ")
    lexicon = Lexicon(["le", "chat", "chien"], alphabet)
    frames = [{"l": 0.9}, {"e": 0.9}, {" ": 0.9}, {"c": 0.9}, {"h": 0.9}, {"e": 0.5, "a": 0.45},
              {"t": 0.9}]
    lp = posterior(frames, alphabet)
    assert greedy_decode(*batch(lp), alphabet) == ["le chet"]
    assert ctc_decode(*batch(lp), alphabet, beam_width=10, lexicon=lexicon) == ["le chat"]
    # A space in the middle of an unfinished word is not allowed: "ch" is not a word.
    lp = posterior([{"c": 0.9}, {"h": 0.9}, {" ": 0.9}, {"a": 0.6}, {"t": 0.9}], alphabet)
    assert greedy_decode(*batch(lp), alphabet) == ["ch at"]
    assert ctc_decode(*batch(lp), alphabet, beam_width=10, lexicon=lexicon) == ["chat"]


def test_lexicon_loading_and_errors(tmp_path):
    alphabet = Alphabet("abc")
    f = tmp_path / "words.txt"
    f.write_text("abc ba\ncab\nxyz\n", encoding="utf-8")
    lexicon = Lexicon.load(f, alphabet)
    assert len(lexicon) == 3 and "ba" in lexicon and lexicon.skipped == ["xyz"]
    f.write_text("xyz\n", encoding="utf-8")
    with pytest.raises(ValueError, match="words.txt"):
        Lexicon.load(f, alphabet)
    with pytest.raises(ValueError, match="beam"):
        ctc_decode(*batch(np.log(np.full((2, 4), 0.25))), alphabet, beam_width=0, lexicon=lexicon)


def test_lexicon_output_is_a_lexicon_entry_even_when_unfinished_words_dominate():
    # The posterior clearly reads "cha": every label in a narrow beam is an unfinished "chat"
    # unless the best complete label is kept alongside them.
    alphabet = Alphabet("acht")
    lexicon = Lexicon(["chat", "a"], alphabet)
    lp = posterior([{"c": 0.9}, {"h": 0.9}, {"a": 0.9}], alphabet)
    assert ctc_decode(*batch(lp), alphabet, beam_width=3, lexicon=lexicon) == ["a"]
