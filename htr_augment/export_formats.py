"""Folder layouts that other HTR frameworks train on, written like the project's LMDB:
into ``OUT.partial`` and renamed to ``OUT`` when complete, resumable after an interruption
(same interface as htr_augment.data.lmdb_format.LmdbWriter: add, commit, finish, close).

- Kraken (``ketos train -f path``): ``OUT/000000001.png`` beside ``OUT/000000001.gt.txt``
  (the line's text, UTF-8, one line), and ``OUT/manifest.txt`` listing the images
  (``ketos train -f path -t manifest.txt`` run inside OUT).
- PyLaia (``pylaia-htr-train-ctc syms.txt images train.txt val.txt``): ``OUT/images/ID.png``;
  ``OUT/syms.txt``, one ``symbol index`` per line, ``<ctc> 0`` first and ``<space>`` for the
  space; ground-truth tables ``ID c h a r s`` (characters separated by spaces, ``<space>``
  between words): ``gt.txt`` (all), ``train.txt`` and ``val.txt`` (every `val_every`-th
  sample), and ``*_ids.txt`` (the IDs, for pylaia-htr-decode-ctc).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import check_build_target, install_built, write_atomic
from .data.lmdb_format import partial_path

STATE = ".export-state.json"
LABELS = ".labels.jsonl"
CTC, SPACE = "<ctc>", "<space>"


class FolderWriter:
    """Samples as files in ``OUT.partial``; labels and resume state committed together."""

    format_name = "folder"

    def __init__(self, out: str | os.PathLike, fingerprint: dict, *, resume: bool = False, overwrite: bool = False):
        self.out, self.partial = Path(out), partial_path(out)
        check_build_target(self.out, self.partial, resume=resume, overwrite=overwrite, what="export")
        self.fingerprint = json.loads(json.dumps({"format": self.format_name, **fingerprint}))
        self.count, self.state, self.records = 0, {}, []
        state_file = self.partial / STATE
        if state_file.is_file():
            saved = json.loads(state_file.read_text(encoding="utf-8"))
            if saved.get("fingerprint") != self.fingerprint:
                raise ValueError(f"{self.partial} was started with other inputs or options; cannot resume it "
                                 f"(pass --overwrite to start over).\n  then: {saved.get('fingerprint')}\n"
                                 f"  now:  {self.fingerprint}")
            self.count, self.state = saved["count"], saved["state"]
            lines = (self.partial / LABELS).read_text(encoding="utf-8").splitlines()
            self.records = [json.loads(x) for x in lines[:self.count]]  # later ones were never committed
            write_atomic(self.partial / LABELS, "".join(x + "\n" for x in lines[:self.count]))
        self.partial.mkdir(parents=True, exist_ok=True)
        self._setup()
        self.resumed_from = self.count
        self._pending: list[dict] = []

    def _setup(self) -> None:
        pass

    def _name(self, i: int) -> str:
        return f"{i:09d}"

    def _write_sample(self, name: str, image: bytes, label: str) -> None:
        raise NotImplementedError

    def add(self, image: bytes, label: str, writer: str = "", source: str = "") -> int:
        self.count += 1
        name = self._name(self.count)
        self._write_sample(name, image, label)
        self._pending.append({"id": name, "label": label, "writer": writer, "source": source})
        return self.count

    def commit(self, state: dict | None = None) -> None:
        """Make the samples added so far durable, with the caller's resume state."""
        if state is not None:
            self.state = state
        with open(self.partial / LABELS, "a", encoding="utf-8") as f:  # appended, then the count that covers it
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self._pending)
            f.flush()
            os.fsync(f.fileno())
        self.records += self._pending
        self._pending = []
        write_atomic(self.partial / STATE, json.dumps({"fingerprint": self.fingerprint, "count": self.count,
                                                       "state": self.state}, ensure_ascii=False))

    def labels(self):
        for r in self.records:
            yield r["label"], r["writer"]

    def _finish_files(self, meta: dict) -> None:
        pass

    def finish(self, meta: dict) -> Path:
        if self._pending:
            self.commit()
        self._finish_files(meta)
        write_atomic(self.partial / "meta.json", json.dumps({"format": self.format_name, "num_samples": self.count,
                                                             **meta}, ensure_ascii=False, indent=1) + "\n")
        write_atomic(self.partial / "samples.tsv", "id\tlabel\twriter\tsource\n" + "".join(
            f"{r['id']}\t{r['label']}\t{r['writer']}\t{r['source']}\n" for r in self.records))
        (self.partial / STATE).unlink()
        (self.partial / LABELS).unlink()
        return install_built(self.partial, self.out)  # an existing OUT only with overwrite

    def close(self) -> None:
        """Leave the partial export as it is (for a later resume); uncommitted samples are redone."""


class KrakenWriter(FolderWriter):
    format_name = "kraken"

    def _write_sample(self, name: str, image: bytes, label: str) -> None:
        write_atomic(self.partial / f"{name}.png", image)
        write_atomic(self.partial / f"{name}.gt.txt", label + "\n")

    def _finish_files(self, meta: dict) -> None:
        write_atomic(self.partial / "manifest.txt", "".join(f"{r['id']}.png\n" for r in self.records))


def pylaia_tokens(text: str) -> str:
    """A label as PyLaia's ground-truth tables hold it: characters separated by spaces,
    the space itself written <space>."""
    return " ".join(SPACE if c == " " else c for c in text)


class PylaiaWriter(FolderWriter):
    format_name = "pylaia"

    def __init__(self, *args, val_every: int = 20, **kw):
        if val_every < 2:
            raise ValueError("val_every must be at least 2")
        self.val_every = val_every
        super().__init__(*args, **kw)

    def _setup(self) -> None:
        (self.partial / "images").mkdir(exist_ok=True)

    def _write_sample(self, name: str, image: bytes, label: str) -> None:
        if any(c.isspace() and c != " " for c in label):
            raise ValueError(f"sample {name}: label {label!r} holds whitespace other than single spaces")
        write_atomic(self.partial / "images" / f"{name}.png", image)

    def _finish_files(self, meta: dict) -> None:
        chars = sorted(set(meta.get("alphabet") or []) | {c for r in self.records for c in r["label"]})
        symbols = [CTC, SPACE] + [c for c in chars if c != " "]
        write_atomic(self.partial / "syms.txt", "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))
        splits = {"gt": self.records, "train": [], "val": []}
        for k, r in enumerate(self.records, 1):
            splits["val" if k % self.val_every == 0 else "train"].append(r)
        for split, records in splits.items():
            write_atomic(self.partial / f"{split}.txt", "".join(f"{r['id']} {pylaia_tokens(r['label'])}\n"
                                                                 for r in records))
            write_atomic(self.partial / f"{split}_ids.txt", "".join(f"{r['id']}\n" for r in records))


WRITERS = {"kraken": KrakenWriter, "pylaia": PylaiaWriter}
