"""Labelled-image inputs for the LMDB builder.

Each reader yields `Item`s in a fixed order. An item names where it came from
(`source`, e.g. ``lines.tsv:12``) and loads its image lazily, so a resumed build
skips what is done without reading it, and a bad sample is reported by name.
"""
from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..alphabet import normalize_text
from ..images import decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


class InputError(ValueError):
    """An input file as a whole cannot be read (wrong encoding, missing columns...)."""


class RejectedSample(Exception):
    """One sample is unusable; `reason` is a short category, the message says why."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


def reject_counts(rejects: list[list[str]]) -> list[str]:
    """Summary lines of [source, reason, detail] rejects: one per reason, most frequent first."""
    return [f"  {n:6d}  {reason}" for reason, n in Counter(r[1] for r in rejects).most_common()]


@dataclass
class Item:
    source: str  # "file:line" or a path: how a user finds the sample again
    label: str | None
    writer: str
    load: Callable[[], tuple[bytes | None, np.ndarray]]  # (original bytes or None, grayscale)


def _load_file(path: Path) -> Callable[[], tuple[bytes, np.ndarray]]:
    def load():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RejectedSample("missing file", f"no such file: {path}") from None
        except OSError as e:
            raise RejectedSample("unreadable file", f"{path}: {e.strerror}") from None
        try:
            return data, decode_image(data, str(path))
        except ValueError as e:
            raise RejectedSample("undecodable image", str(e)) from None
    return load


def _read_text_lines(path: Path) -> list[str]:
    """Decode a UTF-8 text file, naming the first bad line if it is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}:{n}: not UTF-8 (byte {line[e.start]:#04x} at column {e.start + 1}); "
                             "re-encode the file as UTF-8") from None
    if out and out[-1] == "":
        out.pop()
    return out


def read_tsv(path: str | os.PathLike, split: str | None = None) -> Iterator[Item]:
    """A TSV with header ``file text [document] [split]``; paths relative to the TSV."""
    path = Path(path)
    lines = _read_text_lines(path)
    if not lines:
        raise InputError(f"{path}: empty file")
    header = lines[0].split("\t")
    for col in ("file", "text"):
        if col not in header:
            raise InputError(f"{path}:1: header has no '{col}' column (found: {', '.join(header)})")
    if split is not None and "split" not in header:
        raise InputError(f"{path}:1: --split given but the header has no 'split' column")
    col = {name: header.index(name) for name in header}
    root = path.parent
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = next(csv.reader(io.StringIO(line), delimiter="\t", quoting=csv.QUOTE_NONE))
        where = f"{path}:{n}"
        if len(fields) != len(header):
            yield Item(where, None, "", _reject("malformed row",
                       f"{where}: {len(fields)} columns, header has {len(header)}"))
            continue
        if split is not None and fields[col["split"]] != split:
            continue
        writer = fields[col["document"]] if "document" in col else ""
        yield Item(where, fields[col["text"]], writer, _load_file(root / fields[col["file"]]))


def read_gt(path: str | os.PathLike) -> Iterator[Item]:
    """A ground-truth file of ``path<TAB>label`` lines; paths relative to the file."""
    path = Path(path)
    root = path.parent
    for n, line in enumerate(_read_text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if "\t" not in line:
            yield Item(where, None, "", _reject("malformed row", f"{where}: no TAB between path and label"))
            continue
        file, label = line.split("\t", 1)
        yield Item(where, label, "", _load_file(root / file))


_SEED_NAME = re.compile(r"^(?P<word>.*?) \(\d+\)$")


def read_folder(path: str | os.PathLike) -> Iterator[Item]:
    """A folder named the seed's way: ``<word> (<n>).png``, label = the part before `` (``."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        m = _SEED_NAME.match(file.stem)
        label = m.group("word") if m else file.stem
        yield Item(str(file), label, path.name, _load_file(file))


def read_lmdb(path: str | os.PathLike) -> Iterator[Item]:
    """An LMDB in the standard layout (this tool's or another's): to re-encode it at another
    --height, filter it by --alphabet, or merge it with other inputs. Labels, writer ids and the
    samples' recorded sources are kept (a sample without one is named ``PATH#index``)."""
    from .lmdb_format import image_key, label_key, open_shared, read_num_samples, source_key, writer_key
    try:
        env = open_shared(path)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    with env.begin() as txn:
        n = read_num_samples(txn, path)
        rows = [(txn.get(label_key(i)), txn.get(writer_key(i)), txn.get(source_key(i))) for i in range(1, n + 1)]

    def load(i: int, where: str):
        def run():
            with open_shared(path).begin() as txn:
                data = txn.get(image_key(i))
            if data is None:
                raise RejectedSample("missing image", f"{where}: no {image_key(i).decode()} key")
            try:
                return data, decode_image(data, where)
            except ValueError as e:
                raise RejectedSample("undecodable image", str(e)) from None
        return run

    for i, (label, writer, source) in enumerate(rows, 1):
        where = f"{path}#{i}"
        if label is None:
            yield Item(where, None, "", _reject("missing label", f"{where}: no {label_key(i).decode()} key"))
            continue
        yield Item(source.decode("utf-8") if source else where, label.decode("utf-8"),
                   writer.decode("utf-8") if writer else "", load(i, where))


def _reject(reason: str, detail: str):
    def load():
        raise RejectedSample(reason, detail)
    return load


# ---------------------------------------------------------------- ALTO ----
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _polygon(line: ET.Element) -> np.ndarray | None:
    for el in line.iter():
        if _local(el.tag) == "Polygon" and el.get("POINTS"):
            nums = [float(v) for v in re.split(r"[\s,]+", el.get("POINTS").strip()) if v]
            if len(nums) >= 6 and len(nums) % 2 == 0:
                return np.round(np.array(nums).reshape(-1, 2)).astype(np.int32)
    try:
        x, y, w, h = (float(line.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
    except (TypeError, ValueError):
        return None
    return np.round(np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])).astype(np.int32)


def crop_polygon(page: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Crop the polygon's bounding box; pixels outside the polygon become white."""
    h, w = page.shape[:2]
    x0, y0 = np.clip(poly.min(0), 0, [w, h])
    x1, y1 = np.clip(poly.max(0) + 1, 0, [w, h])
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise RejectedSample("empty region", f"polygon lies outside the {w}x{h} page")
    crop = page[y0:y1, x0:x1].copy()
    mask = np.zeros(crop.shape, np.uint8)
    cv2.fillPoly(mask, [poly - [x0, y0]], 255)
    crop[mask == 0] = 255
    return crop


def read_alto(path: str | os.PathLike) -> Iterator[Item]:
    """Page images + ALTO XML: one item per TextLine, cropped by its polygon.

    `path` is an ALTO file or a folder of them. The page image is the ALTO's
    ``sourceImageInformation/fileName`` next to the XML (else the XML's stem with
    an image suffix); the writer is the XML's stem."""
    path = Path(path)
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path}: no ALTO .xml files")
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise InputError(f"{xml}: not well-formed XML ({e})") from None
        if _local(root.tag) != "alto":
            raise InputError(f"{xml}: not an ALTO file (root element <{_local(root.tag)}>)")
        image = _alto_image(xml, root)
        page_cache: dict = {}

        def load_page(image=image, cache=page_cache):
            if "page" not in cache:
                if image is None:
                    raise RejectedSample("missing file", f"no page image found for {xml}")
                cache["page"] = _load_file(image)()[1]
            return cache["page"]

        for n, line in enumerate((el for el in root.iter() if _local(el.tag) == "TextLine"), 1):
            where = f"{xml}:line {n} ({line.get('ID', '?')})"
            words = [s.get("CONTENT", "") for s in line if _local(s.tag) == "String"]
            label = " ".join(w for w in words if w)
            poly = _polygon(line)
            if poly is None:
                yield Item(where, label, xml.stem, _reject("no geometry", f"{where}: TextLine has no polygon or box"))
                continue

            def load(poly=poly, load_page=load_page):
                return None, crop_polygon(load_page(), poly)
            yield Item(where, label, xml.stem, load)


def _alto_image(xml: Path, root: ET.Element) -> Path | None:
    for el in root.iter():
        if _local(el.tag) == "fileName" and el.text and el.text.strip():
            candidate = xml.parent / Path(el.text.strip()).name
            if candidate.is_file():
                return candidate
    for suffix in (".jpg", ".jpeg", ".png", ".tif", ".tiff"):
        candidate = xml.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def normalize_label(label: str) -> str:
    """Labels are NFC with surrounding whitespace stripped and inner runs collapsed."""
    return " ".join(normalize_text(label).split())
