import logging
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from htr_augment import Alphabet, AlphabetError, CTCCollate, LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt, read_tsv


@pytest.fixture(scope="module")
def real_lmdb(copiste, tmp_path_factory):
    """40 real Copiste validation lines, resized to 48 px at build time."""
    tmp = tmp_path_factory.mktemp("real")
    items = [i for i in read_tsv(copiste / "lines.tsv", "val")][:40]
    build(items, tmp / "val.lmdb", BuildOptions(height=48), inputs=["copiste val"], progress=False)
    return tmp / "val.lmdb", [i.label for i in items]


def test_reads_normalised_tensors_text_and_writer(real_lmdb):
    path, labels = real_lmdb
    ds = LmdbWordDataset(path)
    assert len(ds) == 40 and ds.height == 48
    s = ds[0]
    assert s.image.dtype == torch.float32 and s.image.shape[:2] == (1, 48)
    assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
    assert s.image.mean() < 0.3  # ink = 1 on a background of 0: mostly background
    assert s.text == labels[0] and s.writer.startswith("imp_wikitexte_")
    assert ds[-1].text == labels[-1]
    assert LmdbWordDataset(path, height=32)[0].image.shape[1] == 32


def test_filters_are_counted_and_logged(real_lmdb, caplog):
    path, labels = real_lmdb
    short = sorted(len(t) for t in labels)[10]
    with caplog.at_level(logging.WARNING):
        ds = LmdbWordDataset(path, max_length=short)
    too_long = sum(len(t) > short for t in labels)
    assert ds.dropped["longer than max_length"] == too_long > 0
    assert len(ds) == 40 - too_long
    assert "dropped" in caplog.text and str(too_long) in caplog.text
    small = Alphabet.from_labels([labels[0]])
    ds = LmdbWordDataset(path, alphabet=small)
    assert ds.dropped["character outside alphabet"] == sum(bool(small.missing(t)) for t in labels)
    assert all(not small.missing(t) for t in ds.texts)
    writer = LmdbWordDataset(path).writers[0]
    ds = LmdbWordDataset(path, writers={writer})
    assert set(ds.writers) == {writer} and not ds.dropped


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_read_the_same_samples(real_lmdb, context):
    path, labels = real_lmdb
    ds = LmdbWordDataset(path)
    ds[0]  # open the environment in this process first: workers must not inherit it
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context,
                        collate_fn=CTCCollate(ds.alphabet))
    texts = [t for batch in loader for t in batch["texts"]]
    assert texts == labels
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5].image, ds[5].image)


def test_collate_pads_with_background_and_encodes_targets(tmp_path):
    from .conftest import write_gt
    gt = write_gt(tmp_path / "src", ["a", "abcdef", "cab"])
    build(read_gt(gt), tmp_path / "w.lmdb", BuildOptions(), inputs=["x"], progress=False)
    ds = LmdbWordDataset(tmp_path / "w.lmdb")
    assert ds.height == 64  # no build height in meta: the documented default
    ds = LmdbWordDataset(tmp_path / "w.lmdb", height=32)
    collate = CTCCollate(ds.alphabet, width_multiple=8)
    batch = collate([ds[0], ds[1], ds[2]])
    widths = [ds[i].image.shape[-1] for i in range(3)]
    assert batch["images"].shape == (3, 1, 32, -(-max(widths) // 8) * 8)
    assert batch["widths"].tolist() == widths
    assert (batch["images"][0, :, :, widths[0]:] == 0).all()
    assert batch["target_lengths"].tolist() == [1, 6, 3]
    assert ds.alphabet.decode(batch["targets"][1:7]) == "abcdef"
    with pytest.raises(AlphabetError, match="'c'.*'b'.*sample :cab"):
        CTCCollate(Alphabet(["a"]))([ds[2]])


def test_missing_lmdb_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LMDB"):
        LmdbWordDataset(tmp_path / "none.lmdb")
