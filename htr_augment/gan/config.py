"""The GAN's configuration: defaults here, overrides from configs/gan/*.toml."""
from __future__ import annotations

import os

from ..config import load_config, merge

DEFAULTS: dict = {
    "data": {
        "height": 32,          # image height of G's output and of the real words fed to D and R
        "px_per_char": 16,     # G's canonical width per character; real words are resized to it
        "min_length": 1,
        "max_length": 12,
        "num_workers": 0,
    },
    "generator": {
        "base": 16, "channel_mult": [8, 4, 2], "z_dim": 32, "embed_dim": 64,
        "text_hidden": 64, "text_layers": 1,
        "norm": "adain",       # masked AdaIN: a word never depends on its batch ("batch": the first generators)
        # char_style: the style also scales and shifts each character's vector before it becomes a
        # patch (FiLM), so a style can change letter shapes letter by letter, not only add the same
        # offset to every letter. Zero-initialised: weights trained without it keep their output
        # (train --init-from them).
        "char_style": False,
        # char_noise: dims of a noise vector of each letter's own, added to its patch (0: none), so
        # that one hand can write its letters in more than one way (with train.div_local). Near-zero
        # at first: weights trained without it keep their output (train --init-from them).
        "char_noise": 0,
    },
    "discriminator": {"base": 16, "channel_mult": [1, 2, 4, 8],
                      "pool": "mean",  # width-independent score ("sum": the first generators)
                      # Minibatch standard deviation over groups of this many words (0: off): D sees
                      # how much a batch's hands vary. Zero-initialised (train --init-from adds it).
                      "mbstd_group": 0},
    "style": {
        # A style encoder E (HiGAN+, GANwriting): G(E(x), text(x)) reconstructs the real word x,
        # G also writes random text in E(x) and in z ~ N(0, I) styles, and E(G(z, t)) ~ z
        # (latent reconstruction) so that different z give different hands.
        "enabled": True,
        "base": 16,
        "kl": 1e-4,            # KL(E(x) || N(0, I)) weight: E's codes stay near G's prior
        # Prior styles from a Gaussian fitted to E's codes of real training words (refitted at each
        # checkpoint) instead of N(0, I): in the first run E's codes had per-dimension spread 0.13
        # around a mean of magnitude 0.5, and G wrote nothing legible from N(0, I) styles while
        # it wrote new text in E(x) styles at CER 0.36 (issue 9, checkpoints/gan_v2/README.md).
        "fitted_prior": False,
    },
    "recognizer": {
        # R: a recognizer.model CRNN trained on real words only. `config` names its TOML;
        # `checkpoint` optionally starts it from a trained word recognizer.
        "config": "configs/recognizer/tiny.toml",
        "checkpoint": "",
        "lr": 2e-4,
        # R trains alone on real words (G's geometry) for this many iterations, then the game
        # starts. frozen: R stops there (HiGAN+), so G cannot please a moving R without strokes.
        "pretrain_steps": 0,
        "frozen": False,
    },
    "train": {
        "batch_size": 16,
        "max_steps": 2000,     # iterations: one real batch and one D step each
        "g_every": 4,          # G steps once per this many iterations (ScrabbleGAN, HiGAN+)
        "lr_g": 1e-4, "lr_d": 2e-4,
        # lr_char_style: the learning rate of generator.char_style's FiLM (0: lr_g). It starts at
        # zero, where Adam's steps of lr_g only random-walk it (measured: mean |w| 4e-4 after 375
        # G steps), so a new pathway may need larger steps to be used within a run.
        "lr_char_style": 0.0,
        "betas_g": [0.5, 0.999], "betas_d": [0.0, 0.999],
        "grad_clip_g": 10.0,   # max norm of G's (and E's) gradient; 0: none
        "lookahead": False, "lookahead_k": 5, "lookahead_alpha": 0.5,
        # Loss weights on the generated image's gradients, each normalised by a running
        # average of its std (balance.py). alpha: CTC relative to the adversarial term.
        "w_adv": 1.0, "alpha": 1.0, "w_rec": 1.0, "w_info": 1.0,
        # w_div: mode seeking (Mao et al. 2019): the same texts in two prior styles are pushed
        # apart, against the narrow hands of the first CPU run (z-diversity 0.05). 0: off.
        "w_div": 0.0,
        # div_local: the second chunk keeps the style z and draws only the letters' noise anew
        # (generator.char_noise), so the two words can differ only letter by letter, not in size,
        # slant or width. div_cap: each pair's distance counts up to this much (mean absolute
        # difference, [-1, 1] scale; 0: unbounded). Stage 18's unbounded pixel distance at w_div 1
        # made bars and waves; a cap stops paying for distance once the letters differ enough.
        # lr_char_noise: the learning rate of the letters' noise pathway (0: lr_g).
        "div_local": False, "div_cap": 0.0, "lr_char_noise": 0.0,
        # div_space: where the two words' distance is measured. "pixel": the images (mean absolute
        # difference, [-1, 1] scale), which strokes, joins and accents satisfy cheaply (stage 19).
        # "writer": the writer classifier W's feature map after div_stage down-sampling stages (as
        # W reads, train.w_input; mean absolute difference of its features), which only changes W
        # uses to tell writers apart satisfy. Needs W (w_wid > 0); div_cap is then in W's units.
        "div_space": "pixel", "div_stage": 2,
        # w_wid: writer identity (HiGAN+): a writer classifier W learns the training writers from
        # real words, and G's new text in E(x) must classify as x's writer, so that E's codes
        # (and the prior fitted to them) carry the hand. 0: off, no W. wid_start: the iteration
        # from which G's term counts (W trains from its creation on, so that a run resumed
        # from weights without W first gets a W worth listening to). lr_w = 0 holds W fixed (a
        # config's learning rates apply on resume too; W has no batch statistics).
        "w_wid": 0.0, "wid_start": 0, "lr_w": 2e-4,
        # w_input: what W reads (training, writer identity and contextual loss alike). "raw": the
        # words as they are. "stretched": each word's ink scaled so that its 0.99 quantile is full
        # ink (images.stretch_ink_batch), since a W trained on raw Copiste words told writers
        # apart by their page's ink level (accuracy 0.79 -> 0.06 once the same words were
        # stretched; checkpoints/gan_v11/README.md), a cue G cannot take from E(x). A checkpoint's
        # W trained on other inputs is not reused: W starts afresh (set wid_start after the resume).
        "w_input": "raw",
        # w_cx: contextual loss (contextual.py, HiGAN+): every local feature of x, in W's feature
        # map after cx_stage down-sampling stages, must have a close match somewhere in G's new
        # text in E(x): x's letter shapes without alignment. Needs W (w_wid > 0); counts from
        # wid_start, as the writer-identity term does. 0: off. cx_on: which of G's words in E(x) is
        # compared with x: "new_text" (another text: letter shapes without alignment, HiGAN+'s use)
        # or "reconstruction" (x's own text: a feature loss that tolerates the misalignment that
        # makes the pixel L1 of the reconstruction average strokes away).
        "w_cx": 0.0, "cx_stage": 2, "cx_bandwidth": 0.5, "cx_on": "new_text",
        # Share of G's random texts drawn from the lexicon's capitalized words (0: as they come).
        "text_caps_share": 0.0,
        "balance_decay": 0.99,
        "ema_decay": 0.999,
        "diffaugment": ["translation", "cutout", "color"],
        "seed": 0,
        "log_every": 10,
        "sample_every": 200,
        "checkpoint_every": 200,
        # Also keep OUT/step%07d.pt every this many steps (0: only last.pt), so the quality of
        # a run can be measured along the way (the convergence table in the README).
        "keep_every": 0,
        # Health, every eval_every iterations on held-out real words (0: never): D's AUC and
        # margin, the live and EMA G's R-CER and peak ink, z-diversity (health.py).
        # OUT/healthy.pt is the last checkpoint whose live and EMA R-CER stayed below breakdown_cer
        # and at most breakdown_vs_real times R's CER on the held-out real words (0: no such bound).
        # The second bound caught what the first let through: stage 18's live G drew bars that R
        # read at CER 0.53, twice the real words' 0.27 (a healthy G's words read at 0.01-0.06).
        "eval_every": 500,
        "eval_words": 128,
        "breakdown_cer": 0.8,
        "breakdown_vs_real": 1.0,
    },
}


def load_gan_config(path: str | os.PathLike | None = None) -> dict:
    return merge(DEFAULTS, load_config(path) if path else {}, where=str(path or "gan config"))
