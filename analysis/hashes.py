"""Perceptual hashes (imagehash pHash and dHash) as packed bits, ready for faiss binary indexes.

Curate stores `phash` (and optionally `dhash`) as hex strings in each sample's json; those are
reused so the hash is always of the same crop, and computed here only where missing. Packed
layout: 8 bytes per 64-bit hash, bit order as `np.packbits` of imagehash's row-major bits,
which is exactly `bytes.fromhex(str(hash))`.
"""
from __future__ import annotations

import numpy as np
import imagehash
from PIL import Image

HASH_BYTES = 8          # 64-bit hashes (hash_size 8)
KINDS = ("phash", "dhash")


def hex_to_bytes(text: str | None) -> np.ndarray | None:
    """Packed bytes of a 64-bit hex hash, or None when the text is missing or malformed."""
    if not text or not isinstance(text, str):
        return None
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        return None
    if len(raw) != HASH_BYTES:
        return None
    return np.frombuffer(raw, dtype=np.uint8)


def compute(image: Image.Image, kind: str) -> np.ndarray:
    fn = imagehash.phash if kind == "phash" else imagehash.dhash
    return np.packbits(fn(image).hash.reshape(-1))


def sample_hashes(image: Image.Image | None, meta: dict) -> np.ndarray:
    """(16,) uint8: pHash then dHash; taken from `meta` when curate stored them."""
    out = np.zeros(2 * HASH_BYTES, dtype=np.uint8)
    for i, kind in enumerate(KINDS):
        packed = hex_to_bytes(meta.get(kind))
        if packed is None and image is not None:
            packed = compute(image, kind)
        if packed is not None:
            out[i * HASH_BYTES:(i + 1) * HASH_BYTES] = packed
    return out


def hamming_matrix_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense Hamming distances between packed codes (tests and small inputs only)."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2)
