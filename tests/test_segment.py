"""CTC forced alignment and line-to-word segmentation (synthetic lines with known cuts, then real Copiste lines)."""
import csv
import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from htr_augment.alphabet import Alphabet
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.lmdb_format import LmdbWriter, partial_path
from htr_augment.data.sources import RejectedSample, read_tsv
from htr_augment.images import encode_png
from recognizer import segment as sg
from recognizer.alignment import AlignmentError, forced_align
from recognizer.model import CRNN, RecognizerOutput

ALPHABET = Alphabet("ab ")  # classes: 0 blank, 1 " ", 2 "a", 3 "b"
STRIDE = 4


# -- forced alignment ---------------------------------------------------------------------------------
def test_forced_alignment_follows_the_trellis():
    # argmax per frame is a a a b -, but "aab" needs a blank between the two a's
    P = np.array([[0.1, 0.8, 0.1], [0.35, 0.6, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.8, 0.1, 0.1]])
    a = forced_align(np.log(P), [1, 1, 2])
    assert a.path.tolist() == [1, 0, 1, 2, 0]
    assert a.char_index.tolist() == [0, -1, 1, 2, -1]
    assert a.char_spans() == [(0, 1), (2, 3), (3, 4)]
    assert a.score == pytest.approx(math.log(0.8 * 0.35 * 0.8 * 0.7 * 0.8))
    # different neighbours need no blank; the label may end on a blank or on its last character
    assert forced_align(np.log(P[[0, 3]]), [1, 2]).path.tolist() == [1, 2]
    assert forced_align(np.log(P), [1]).path.tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(AlignmentError, match="needs 4"):
        forced_align(np.log(P[:3]), [1, 1, 2])


# -- a synthetic line of blocks with known word boundaries --------------------------------------------
def block_line(text: str, rule: bool = True):
    """Each character a black 8 px block, 4 px apart inside a word, 24 px between words; a dashed rule
    under the whole line. Returns the image, the word column ranges and the frame of each character."""
    x, words, frames = 8, [], []
    blocks = []
    for word in text.split(" "):
        start = x
        for _ in word:
            blocks.append(x)
            frames.append(x // STRIDE)  # peaky CTC: each character fires on its first frame
            x += 12
        words.append((word, start, x - 4))
        frames.append((x - 4 + x + 20) // 2 // STRIDE)  # the space fires in the middle of the gap
        x += 20
    frames.pop()
    img = np.full((16, x - 20 + 8), 255, np.uint8)
    for b in blocks:
        img[3:12, b:b + 8] = 0
    if rule:
        img[14, :] = 0
        img[14, 2::6] = 255  # dashed: the gaps in the dashes must not count as gaps between words
        img[14, 3::6] = 255
    return img, words, frames


def peaky_posterior(text: str, frames: list[int], T: int, alphabet: Alphabet = ALPHABET, p: float = 0.95):
    lp = np.full((T, len(alphabet)), (1 - p) / (len(alphabet) - 1))
    lp[:, 0] = p
    for f, c in zip(frames, alphabet.encode(text)):
        lp[f, :] = (1 - p) / (len(alphabet) - 1)
        lp[f, c] = p
    return np.log(lp)


def test_forced_alignment_of_a_long_line():
    # More than 127 trellis states: the back-pointers are int8, the walk back must not be.
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 4, size=90).tolist()
    T = 3 * len(targets)
    lp = np.log(np.full((T, 4), 0.05))
    for t in range(T):  # each character over three frames: char, char, blank
        lp[t, targets[t // 3] if t % 3 < 2 else 0] = np.log(0.85)
    a = forced_align(lp, targets)
    assert a.char_spans() == [(3 * k, 3 * k + 2) for k in range(len(targets))]


def test_cuts_fall_in_the_gaps_between_words():
    text = "ab ba a"
    img, words, frames = block_line(text)
    T = -(-img.shape[1] // STRIDE)
    alignment = forced_align(peaky_posterior(text, frames, T), ALPHABET.encode(text))
    assert [s[0] for s in alignment.char_spans()] == frames
    # middle of the frame gap: from after the last character's frame to the next word's first frame
    plain = sg.word_boundaries(alignment, text, STRIDE, img.shape[1])
    last_block_start = [end - 8 for _, _, end in words]
    expected = [0] + [(last_block_start[k] + STRIDE + words[k + 1][1]) // 2 for k in range(2)] + [img.shape[1]]
    assert [(w, x0, x1) for w, x0, x1 in plain] == [(w, a, b) for (w, _, _), a, b in
                                                  zip(words, expected, expected[1:])]
    # snapped to the ink-free run (the dashed rule ignored): exactly the middle of each white gap
    snapped = sg.word_boundaries(alignment, text, STRIDE, img.shape[1], sg.ink_columns(img))
    gaps = [(words[k][2] + words[k + 1][1]) // 2 for k in range(2)]
    assert [x1 for _, _, x1 in snapped[:-1]] == gaps
    # trimmed to the blocks and padded with white
    out = sg.segment_line(img, text, peaky_posterior(text, frames, T), ALPHABET, STRIDE,
                          sg.SegmentOptions(min_score=-1.0, pad=3))
    assert [w for w, _ in out] == ["ab", "ba", "a"]
    for (_, crop), (_, x0, x1) in zip(out, words):
        assert np.array_equal(crop, np.pad(img[:, x0:x1], ((0, 0), (3, 3)), constant_values=255))


def test_a_word_model_without_a_space_class_cuts_the_same_words():
    text = "ab ba a"
    img, words, frames = block_line(text)
    T = -(-img.shape[1] // STRIDE)
    words_only = Alphabet("ab")  # a word recognizer: no space class
    spaceless = [f for f, c in zip(frames, text) if c != " "]  # the frames of the letters only
    lp = peaky_posterior(text.replace(" ", ""), spaceless, T, words_only)
    opts = sg.SegmentOptions(min_score=-1.0, pad=3)
    out = sg.segment_line(img, text, lp, words_only, STRIDE, opts)
    assert [w for w, _ in out] == ["ab", "ba", "a"]
    for (_, crop), (_, x0, x1) in zip(out, words):
        assert np.array_equal(crop, np.pad(img[:, x0:x1], ((0, 0), (3, 3)), constant_values=255))
    with pytest.raises(RejectedSample, match="'c' in 'ab bc a'") as e:  # other characters are still refused
        sg.segment_line(img, "ab bc a", lp, words_only, STRIDE, opts)
    assert e.value.reason == "character outside alphabet"


def test_bad_lines_are_rejected_with_a_reason():
    text = "ab ba"
    img, _, frames = block_line(text)
    T = -(-img.shape[1] // STRIDE)
    opts = sg.SegmentOptions(min_score=-0.5)
    with pytest.raises(RejectedSample) as e:
        sg.segment_line(img, text, peaky_posterior(text, frames, T, p=0.4), ALPHABET, STRIDE, opts)
    assert e.value.reason == "poor alignment score"
    with pytest.raises(RejectedSample) as e:
        sg.segment_line(img, text, peaky_posterior(text, frames, T)[:4], ALPHABET, STRIDE, opts)
    assert e.value.reason == "alignment impossible"
    with pytest.raises(RejectedSample) as e:
        sg.segment_line(img, "abc", peaky_posterior(text, frames, T), ALPHABET, STRIDE, opts)
    assert e.value.reason == "character outside alphabet"


# -- the LMDB pipeline with an oracle model -----------------------------------------------------------
class Oracle(nn.Module):
    """Returns the prepared posterior of each line, found by its (unique) width."""

    stride = STRIDE

    def __init__(self, table: dict[int, np.ndarray], fail_after: int | None = None):
        super().__init__()
        self.table, self.fail_after, self.calls = table, fail_after, 0

    def forward(self, images, widths):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        lps = [torch.tensor(self.table[int(w)], dtype=torch.float32) for w in widths]
        T = max(len(lp) for lp in lps)
        out = torch.full((T, len(lps), len(ALPHABET)), -30.0)
        out[:, :, 0] = 0.0
        for b, lp in enumerate(lps):
            out[: len(lp), b] = lp
        return RecognizerOutput(out, torch.tensor([len(lp) for lp in lps]), None)


def synthetic_lines(tmp_path):
    texts = ["ab", "ab ba", "b a", "ba ab a", "aa b", "b b b a"]
    table, writer = {}, LmdbWriter(tmp_path / "lines.lmdb", {})
    for i, text in enumerate(texts):
        img, _, frames = block_line(text)
        img = np.pad(img, ((0, 0), (0, 4 * i)), constant_values=255)  # unique widths for the oracle
        T = -(-img.shape[1] // STRIDE)
        table[img.shape[1]] = peaky_posterior(text, frames, T, p=0.95 if i != 2 else 0.3)  # line 3: poor
        writer.add(encode_png(img), text, f"writer{i % 2}", f"synthetic:{i}")
    writer.finish({"source": ["synthetic blocks"]})
    return texts, table


def test_segment_lines_writes_words_rejects_and_resumes(tmp_path):
    texts, table = synthetic_lines(tmp_path)
    opts = sg.SegmentOptions(min_score=-0.5)
    full = sg.segment_lines(Oracle(table), ALPHABET, tmp_path / "lines.lmdb", tmp_path / "full.lmdb", opts,
                            batch_size=2, progress=False)
    kept = [t for i, t in enumerate(texts) if i != 2]
    assert (full.lines, full.lines_kept, full.words) == (6, 5, sum(len(t.split()) for t in kept))
    assert [r[:2] for r in full.rejects] == [["synthetic:2", "poor alignment score"]]
    with open(tmp_path / "full.lmdb.rejects.tsv", encoding="utf-8") as f:
        assert list(csv.reader(f, delimiter="\t"))[1][:2] == ["synthetic:2", "poor alignment score"]
    ds = LmdbWordDataset(tmp_path / "full.lmdb")
    assert ds.texts == [w for t in kept for w in t.split()]
    assert ds.writers == [f"writer{i % 2}" for i, t in enumerate(texts) if i != 2 for _ in t.split()]
    assert ds.meta["counts"]["lines_kept"] == 5 and ds.meta["counts"]["lines_rejected"] == 1
    assert ds.meta["counts"]["words_rejected"] == full.words_rejected == len(texts[2].split())
    assert ds.meta["counts"]["words"] == len(ds) and ds.meta["source"][1] == "synthetic blocks"
    assert "credit" not in ds.meta

    with pytest.raises(KeyboardInterrupt):  # interrupted during the second batch
        sg.segment_lines(Oracle(table, fail_after=1), ALPHABET, tmp_path / "lines.lmdb", tmp_path / "part.lmdb",
                         opts, batch_size=2, progress=False)
    assert partial_path(tmp_path / "part.lmdb").is_dir()
    again = sg.segment_lines(Oracle(table), ALPHABET, tmp_path / "lines.lmdb", tmp_path / "part.lmdb", opts,
                             batch_size=2, resume=True, progress=False)
    assert again.resumed_from == 3 and again.words == full.words and len(again.rejects) == 1
    assert LmdbWordDataset(tmp_path / "part.lmdb").texts == ds.texts


# -- real Copiste lines, an untrained tiny CRNN, through the command line ----------------------------
def test_real_copiste_lines_end_to_end(copiste, tmp_path, capsys):
    from htr_augment.training.checkpoint import make_checkpoint, save_checkpoint
    from recognizer.config import make_config

    items = list(read_tsv(copiste / "lines.tsv", "test"))[:4]
    build(items, tmp_path / "lines.lmdb", BuildOptions(), inputs=[f"tsv:{copiste / 'lines.tsv'}"], progress=False)
    lines = LmdbWordDataset(tmp_path / "lines.lmdb")
    alphabet = Alphabet.from_labels(lines.texts)
    config = make_config({"model": {"stem_channels": 8, "stages": [[1, 8], [1, 16]], "pools": [[2, 2]],
                                    "lstm_hidden": 16, "lstm_layers": 1}})
    torch.manual_seed(0)
    model = CRNN(config, len(alphabet))
    save_checkpoint(make_checkpoint("recognizer", config, alphabet, 0, 0, models={"recognizer": model.state_dict()}),
                    tmp_path / "tiny.pt")
    rc = sg.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--lines", str(tmp_path / "lines.lmdb"),
                  "--out", str(tmp_path / "words.lmdb"), "--min-score=-inf", "--grid", str(tmp_path / "grid.png"),
                  "--grid-count", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    words = LmdbWordDataset(tmp_path / "words.lmdb")
    assert words.texts == [w for t in lines.texts for w in t.split(" ")]
    assert words.writers == [wr for t, wr in zip(lines.texts, lines.writers) for _ in t.split(" ")]
    assert len(words) == words.meta["counts"]["words"] and words.meta["counts"]["lines_kept"] == 4
    assert "Copiste d'un jour" in words.meta["credit"]
    assert f"kept 4 of 4 lines: wrote {len(words)} words" in err
    assert all(words[i].image.shape[1] == 64 for i in range(len(words)))
    grid = cv2.imread(str(tmp_path / "grid.png"), cv2.IMREAD_GRAYSCALE)
    assert grid is not None and grid.shape[0] > 2 * 64
    # Running into the same OUT again is refused with a clear message, not a traceback.
    assert sg.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--lines", str(tmp_path / "lines.lmdb"),
                    "--out", str(tmp_path / "words.lmdb"), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
