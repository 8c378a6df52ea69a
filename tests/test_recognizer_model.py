import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from htr_augment.alphabet import Alphabet
from htr_augment.config import ConfigError
from htr_augment.data import WordSample
from htr_augment.images import to_tensor
from htr_augment.training import (CheckpointError, check_alphabet, load_checkpoint, make_checkpoint, rng_state,
                                  save_checkpoint, set_rng_state)
from recognizer import CRNN, AugmentedDataset, Augmenter, greedy_decode, load_recognizer, make_config
from recognizer.config import load_recognizer_config

from .conftest import draw_word

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "recognizer"
SMALL = {"model": {"stem_channels": 8, "stages": [[1, 8], [1, 16], [1, 16]], "lstm_hidden": 16, "lstm_layers": 2}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CRNN(make_config(SMALL), num_classes=11).eval()


@pytest.mark.parametrize("widths", [[1], [37], [64, 5], [203, 17, 96]])
def test_output_shapes_follow_widths(model, widths):
    images = torch.rand(len(widths), 1, 32, max(widths))
    out = model(images, torch.tensor(widths))
    frames = math.ceil(max(widths) / model.stride)
    assert model.stride == 4
    assert out.log_probs.shape == out.aux_log_probs.shape == (frames, len(widths), 11)
    assert out.lengths.tolist() == [math.ceil(w / model.stride) for w in widths]
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(frames, len(widths)), atol=1e-5)
    assert model.features(images, torch.tensor(widths)).shape == (len(widths), 32)


def test_a_sample_does_not_depend_on_the_padding_of_its_batch(model):
    torch.manual_seed(1)
    alone = torch.rand(1, 1, 32, 50)
    wide = torch.cat([torch.nn.functional.pad(alone, (0, 130)), torch.rand(1, 1, 32, 180)])
    widths = torch.tensor([50, 180])
    a, b = model(alone, torch.tensor([50])), model(wide, widths)
    n = int(a.lengths[0])
    assert int(b.lengths[0]) == n
    assert torch.allclose(a.log_probs[:n, 0], b.log_probs[:n, 0], atol=1e-5)
    assert torch.allclose(a.aux_log_probs[:n, 0], b.aux_log_probs[:n, 0], atol=1e-5)
    assert torch.allclose(model.features(alone, torch.tensor([50]))[0], model.features(wide, widths)[0], atol=1e-5)
    # Ink right of the stated width is padding too: ignored.
    noisy = wide.clone()
    noisy[0, :, :, 50:] = 1.0
    assert torch.allclose(model(noisy, widths).log_probs[:n, 0], a.log_probs[:n, 0], atol=1e-5)


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    alphabet = Alphabet("ab")
    paths = [[1, 1, 0, 1, 2, 2, 0], [0, 0, 2, 0, 2, 1, 1]]  # "aab", "bba" with a trailing pad frame
    log_probs = torch.full((7, 2, 3), -10.0)
    for b, path in enumerate(paths):
        for t, c in enumerate(path):
            log_probs[t, b, c] = 0.0
    assert greedy_decode(log_probs, torch.tensor([7, 6]), alphabet) == ["aab", "bba"]
    assert greedy_decode(log_probs, torch.tensor([2, 1]), alphabet) == ["a", ""]


def test_checkpoint_round_trip_with_weights_only(model, tmp_path):
    alphabet = Alphabet("abcdefghij")
    config = make_config(SMALL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 32, 40), torch.tensor([40, 20])).log_probs.sum().backward()
    optimizer.step()
    np.random.seed(3)
    random.seed(3)
    rng = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt = make_checkpoint("recognizer", config, alphabet, step=7, epoch=1, batch_in_epoch=2,
                           models={"recognizer": model.state_dict()}, optimizers={"adamw": optimizer.state_dict()},
                           rng=[rng], extra={"best_cer": 0.5})
    path = save_checkpoint(ckpt, tmp_path / "run" / "last.pt")
    assert not (tmp_path / "run" / "last.pt.tmp").exists()
    raw = torch.load(path, map_location="cpu", weights_only=True)  # nothing that needs unpickling
    assert raw["kind"] == "recognizer" and raw["alphabet"] == list("abcdefghij") and raw["step"] == 7
    loaded, loaded_alphabet, loaded_config = load_recognizer(path)
    assert loaded_alphabet == alphabet and loaded_config == config and not loaded.training
    images, widths = torch.rand(2, 1, 32, 60), torch.tensor([60, 33])
    assert torch.equal(loaded(images, widths).log_probs, model(images, widths).log_probs)
    set_rng_state(raw["rng"][0])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    with pytest.raises(CheckpointError, match="'gan'"):
        load_checkpoint(path, kind="gan")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_alphabet_mismatch_names_the_characters():
    check_alphabet(list("abc"), Alphabet("abc"))
    with pytest.raises(CheckpointError, match=r"dataset has 'é'.*checkpoint has 'c'"):
        check_alphabet(list("abc"), Alphabet("abé"))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_build_a_model(name):
    config = load_recognizer_config(CONFIGS / f"{name}.toml")
    model = CRNN(config, 20).eval()
    h = config["data"]["height"]
    out = model(torch.rand(1, 1, h, 3 * h), torch.tensor([3 * h]))
    assert out.log_probs.shape[0] == out.lengths.item() == math.ceil(3 * h / model.stride)


def test_config_typos_are_errors():
    with pytest.raises(ConfigError, match="unknown key 'lstm_hiden'"):
        make_config({"model": {"lstm_hiden": 3}})
    with pytest.raises(ConfigError, match="schedule"):
        make_config({"train": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="pools"):
        make_config({"model": {"pools": [[2, 2]]}})


def test_augmenter_keeps_height_and_is_picklable_and_seeded():
    img = draw_word("Bonjour", height=32)
    augment = Augmenter({"p_affine": 1.0, "p_distort": 1.0, "p_morph": 1.0, "p_contrast": 1.0})
    clone = pickle.loads(pickle.dumps(augment))
    a = augment(img, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape[0] == 32 and a.shape[1] > 0
    assert np.array_equal(a, clone(img, np.random.default_rng(5)))
    assert not np.array_equal(a, augment(img, np.random.default_rng(6)))
    assert augment(img).shape[0] == 32  # per-process generator seeded from torch.initial_seed()
    assert np.array_equal(Augmenter({"enabled": False})(img), img)


def test_augmented_dataset_depends_on_epoch_and_index_only():
    base = [WordSample(to_tensor(draw_word(w)), w, "x") for w in ["abc", "de", "fgh"]]
    ds = AugmentedDataset(base, Augmenter({"p_affine": 1.0, "p_contrast": 1.0}), seed=1)
    first = [ds[i].image for i in range(3)]
    assert all(torch.equal(ds[i].image, first[i]) for i in (2, 0, 1))
    ds.set_epoch(1)
    assert not torch.equal(ds[0].image, first[0])
    assert ds[0].text == "abc" and ds[0].image.shape[1] == 32
