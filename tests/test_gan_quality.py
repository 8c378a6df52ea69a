import numpy as np
import pytest

from htr_augment.gan.quality import frechet_distance, ink_profile, mean_pairwise_distance


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # Independent dims: FD = sum (mu_a - mu_b)^2 + (s_a - s_b)^2.
    b = rng.normal(0, 1, (20000, 3)) * np.array([1, 2, 3]) + np.array([1, 0, -2])
    expected = 1 + 4 + (0 + 1 + 4)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_ink_profile_tells_dark_strokes_from_grey_haze():
    import torch
    word = torch.zeros(1, 32, 64)
    word[0, 10:22, 8:12] = 0.9   # two dark strokes
    word[0, 10:22, 30:34] = 0.7
    hazy = word.clone()
    hazy[0][word[0] == 0] = 0.15  # grey everywhere else
    clean, grey = ink_profile([word]), ink_profile([hazy])
    assert clean["stroke"] == pytest.approx(0.8, abs=1e-3) and clean["haze"] == 0
    assert grey["stroke"] == pytest.approx(0.8, abs=1e-3) and grey["haze"] == pytest.approx(0.15, abs=1e-3)
    bold = torch.zeros(1, 32, 160)  # a bold, tightly set word: all of it is stroke, no haze
    bold[0, 8:24, 4:156] = 1.0
    bold[0, 8:24, 4:156:6] = 0.0
    assert ink_profile([bold]) == {"stroke": 1.0, "haze": 0.0}


def test_mean_pairwise_distance():
    groups = [np.array([[0, 0], [3, 4]]), np.array([[1, 1]]), np.array([[0, 0], [0, 1], [0, 2]])]
    # pairs: 5 ; (1, 1, 2)
    assert mean_pairwise_distance(groups) == pytest.approx((5 + 1 + 1 + 2) / 4)
    assert np.isnan(mean_pairwise_distance([np.zeros((1, 2))]))


def tiny_reader_checkpoint(path, alphabet_chars="abcdefghijklmnopqrstuvwxyz"):
    """An untrained tiny word recognizer at height 32, as a training checkpoint."""
    import torch

    from htr_augment.alphabet import Alphabet
    from htr_augment.training import make_checkpoint, save_checkpoint
    from recognizer.config import make_config
    from recognizer.model import CRNN
    alphabet = Alphabet(list(alphabet_chars))
    config = make_config({"data": {"height": 32}, "model": {"stem_channels": 4, "stages": [[1, 8], [1, 8]],
                                                            "pools": [[2, 2]], "lstm_hidden": 8, "lstm_layers": 1}})
    torch.manual_seed(0)
    model = CRNN(config, len(alphabet))
    return save_checkpoint(make_checkpoint("recognizer", config, alphabet, 0, 0,
                                           models={"recognizer": model.state_dict()}), path)


def test_reader_reads_any_height_at_its_model_s_and_pickles_without_weights(tmp_path):
    import pickle

    import torch

    from htr_augment.gan.quality import Reader, at_height, recognize
    from recognizer.model import load_recognizer
    from recognizer.pretrained import PretrainedError
    path = tiny_reader_checkpoint(tmp_path / "r.pt")
    torch.manual_seed(1)
    images = [torch.rand(1, 48, w) for w in (40, 72, 96)]
    reader = Reader(path)
    model, alphabet, _ = load_recognizer(path)
    want = recognize(model.eval(), alphabet, [at_height(im, 32) for im in images], features=False)[0]
    assert reader(images) == want and reader.height == 32
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._model is None and clone(images) == want
    with pytest.raises(PretrainedError, match="copiste-words"):
        Reader("no-such-recognizer")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        Reader(tmp_path / "missing.pt")
