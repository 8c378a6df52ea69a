"""The README's table of shipped generators: each file it names exists and is, byte for byte,
the generator its SHA-256 prefix says, so `--generator FILE` reproduces the commands that ran
with those weights (a re-export or an overwritten file would silently change the numbers)."""
import re
from pathlib import Path

from htr_augment.training.checkpoint import file_sha256

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([0-9a-f]{12})` \| `([^`]+\.pt)` \|", re.MULTILINE)


def test_readme_generator_table_names_each_file_by_its_sha256():
    rows = ROW.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(rows) >= 5, "the README's 'Which generator a command used' table is missing"
    files = [f for _, f in rows]
    assert "htr_augment/weights/generator.pt" in files  # the package default is in the table
    for prefix, name in rows:
        digest = file_sha256(ROOT / name)
        assert digest.startswith(prefix), f"{name}: SHA-256 {digest[:12]}, the README says {prefix}"
