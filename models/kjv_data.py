"""The text of models/build_kjv_lm.py: the King James Bible from Debian's bible-kjv, one
verse per line, split by book (Romans to Revelation held out), encoded as character ids,
and cut into the calibration and test windows of models/data/kjv_lm_*.npz."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from build_fashion_cnn import apt_install

APT_PACKAGE = "bible-kjv"
BIBLE_RANGE = "Gen1:1-Rev22:21"
# Every character of the KJV text once the verse references are gone, plus 'X', which
# the text never uses, to round the table to 64. Index = position in this string.
VOCAB = "\n !'(),-.:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
N_BOOKS = 66
FIRST_TEST_BOOK = 44  # Romans, by index in canonical order: Romans..Revelation are held out

CONTEXT = 128  # training window and the key/value cache length
CALIB_SAMPLES = 2000
MAX_TEST_SAMPLES = 10000

_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def ensure_bible() -> str:
    found = shutil.which("bible")
    if found:
        return found
    apt_install(APT_PACKAGE)
    found = shutil.which("bible")
    if not found:
        sys.exit(f"{APT_PACKAGE} installed but the 'bible' program is not on PATH")
    return found


def read_books(bible: str) -> list[tuple[str, str]]:
    """[(book abbreviation, text)] in canonical order; text = one verse per line."""
    try:
        raw = subprocess.run([bible, "-f", BIBLE_RANGE], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        sys.exit(f"'{bible} -f {BIBLE_RANGE}' failed (exit code {exc.returncode}): {exc.stderr.decode(errors='replace')}")
    books: list[tuple[str, list[str]]] = []
    for line in raw.decode("ascii").splitlines():
        m = _VERSE.match(line)
        if not m:
            sys.exit(f"unexpected line in the bible output: {line[:80]!r}")
        book, text = m.group(1), m.group(4)
        if not books or books[-1][0] != book:
            books.append((book, []))
        books[-1][1].append(text + "\n")
    if len(books) != N_BOOKS or books[FIRST_TEST_BOOK][0] != "Rom":
        sys.exit(f"expected {N_BOOKS} books with Romans at index {FIRST_TEST_BOOK}, "
                 f"got {len(books)}: {[b for b, _ in books]}")
    return [(book, "".join(verses)) for book, verses in books]


def encode(text: str) -> np.ndarray:
    table = np.full(256, -1, dtype=np.int64)
    table[np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(VOCAB))
    ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if (ids < 0).any():
        bad = sorted({text[i] for i in np.flatnonzero(ids < 0)[:100]})
        sys.exit(f"characters outside VOCAB in the text: {bad}")
    return ids


def load_split(bible: str) -> tuple[np.ndarray, np.ndarray]:
    books = read_books(bible)
    train = encode("".join(t for _, t in books[:FIRST_TEST_BOOK]))
    test = encode("".join(t for _, t in books[FIRST_TEST_BOOK:]))
    print(f"text: train {len(train)} characters ({books[0][0]}..{books[FIRST_TEST_BOOK - 1][0]}), "
          f"test {len(test)} ({books[FIRST_TEST_BOOK][0]}..{books[-1][0]}, "
          f"{len(test) / (len(train) + len(test)):.1%})")
    return train, test


def windows(ids: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens [N, length] and labels [N, length]: the next character at every position."""
    idx = starts[:, None] + np.arange(length + 1)[None, :]
    chunk = ids[idx]
    return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])


def write_data(train: np.ndarray, test: np.ndarray, out_dir: Path, seed: int) -> tuple[Path, Path]:
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    calib_starts = np.sort(rng.choice(len(train) - CONTEXT, size=CALIB_SAMPLES, replace=False))
    # Consecutive, non-overlapping windows: every held-out character is a label once.
    test_starts = np.arange(0, len(test) - CONTEXT, CONTEXT)[:MAX_TEST_SAMPLES]
    calib_path, test_path = data_dir / "kjv_lm_calib.npz", data_dir / "kjv_lm_test.npz"
    tokens, labels = windows(train, calib_starts, CONTEXT)
    np.savez(calib_path, tokens=tokens, labels=labels)
    tokens, labels = windows(test, test_starts, CONTEXT)
    np.savez(test_path, tokens=tokens, labels=labels)
    print(f"wrote {calib_path} ({CALIB_SAMPLES} training windows, seed {seed}) and "
          f"{test_path} ({len(test_starts)} held-out windows) of {CONTEXT} characters")
    return calib_path, test_path
