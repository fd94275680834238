"""PNG files from NumPy pixel arrays, with a deflate encoder of our own so the bytes never drift.

Why not `zlib.compress`: a PNG's pixels are fixed by the figure, but the compressed bytes
depend on the zlib build (zlib 1.2 vs 1.3, zlib-ng as shipped by several distributions), and a
figure whose bytes change with the machine would fail `sci repro-check` for no scientific
reason. So the image data is deflated here, by a small encoder that is a pure function of the
pixels: one final block with the fixed Huffman code of RFC 1951, and LZ77 matches at only two
distances, 1 (runs of one colour along a row) and one row (a row repeating the row above).
Figures are mostly flat colour, so this gets within a small factor of zlib's size. The `zlib`
module is still used for what is defined exactly: the CRC-32 of each chunk and the Adler-32
of the stream, and by the tests to check that any inflater reads our stream back.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_MATCH = 258
_MAX_DISTANCE = 32768


def _reverse(code: int, bits: int) -> int:
    """Huffman codes are defined most-significant bit first; the stream is packed LSB first."""
    out = 0
    for _ in range(bits):
        out = (out << 1) | (code & 1)
        code >>= 1
    return out


def _literal_code(symbol: int) -> tuple[int, int]:
    """(bits reversed for packing, bit count) of a literal/length symbol, fixed code."""
    if symbol < 144:
        code, bits = 0x30 + symbol, 8
    elif symbol < 256:
        code, bits = 0x190 + symbol - 144, 9
    elif symbol < 280:
        code, bits = symbol - 256, 7
    else:
        code, bits = 0xC0 + symbol - 280, 8
    return _reverse(code, bits), bits


_LITERALS = [_literal_code(symbol) for symbol in range(288)]


def _length_table() -> list[tuple[int, int, int]]:
    """For each match length 3..258: (symbol, extra-bit count, extra-bit value)."""
    bases = []
    for i in range(28):  # symbols 257..284
        extra = 0 if i < 8 else (i - 4) // 4
        base = 3 + i if i < 8 else ((4 + (i & 3)) << extra) + 3
        bases.append((257 + i, extra, base))
    table = [(0, 0, 0)] * (_MAX_MATCH + 1)
    for symbol, extra, base in bases:
        for length in range(base, min(base + (1 << extra), _MAX_MATCH)):
            table[length] = (symbol, extra, length - base)
    table[_MAX_MATCH] = (285, 0, 0)  # 258 has its own symbol
    return table


_LENGTHS = _length_table()


def _distance_code(distance: int) -> tuple[int, int, int]:
    """(5-bit code reversed, extra-bit count, extra-bit value) of a match distance."""
    for code in range(30):
        extra = 0 if code < 4 else (code - 2) // 2
        base = code + 1 if code < 4 else ((2 + (code & 1)) << extra) + 1
        if base <= distance < base + (1 << extra):
            return _reverse(code, 5), extra, distance - base
    raise ValueError(f"distance {distance} is beyond deflate's window")


def _match_lengths(data: np.ndarray, distance: int) -> list[int]:
    """For each position i, how many bytes from i on repeat the bytes `distance` earlier."""
    n = data.size
    equal = np.zeros(n, dtype=bool)
    if 0 < distance < n:
        equal[distance:] = data[distance:] == data[:-distance]
    index = np.arange(n)
    stop = np.where(equal, n, index)  # the first position at or after i that breaks the run
    stop = np.minimum.accumulate(stop[::-1])[::-1]
    return np.minimum(stop - index, _MAX_MATCH).tolist()


def deflate(data: bytes, row_length: int = 0) -> bytes:
    """A zlib stream (RFC 1950) holding `data`, compressed deterministically.

    Greedy parsing: at each position take the longer of the run at distance 1 and the match
    at distance `row_length` (a tie goes to distance 1), if it is at least 3 bytes long;
    otherwise emit one literal.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    runs = _match_lengths(array, 1)
    use_rows = 1 < row_length <= _MAX_DISTANCE
    above = _match_lengths(array, row_length) if use_rows else [0] * array.size
    row_code = _distance_code(row_length) if use_rows else None
    one_code = _distance_code(1)
    values = array.tolist()

    out = bytearray(b"\x78\x01")  # deflate, 32 KiB window, no preset dictionary; header % 31 == 0
    acc, filled = 0, 0

    def put(value: int, bits: int) -> None:
        nonlocal acc, filled
        acc |= value << filled
        filled += bits
        while filled >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            filled -= 8

    put(1, 1)  # BFINAL: this is the only block
    put(1, 2)  # BTYPE 01: fixed Huffman codes
    i, n = 0, len(values)
    while i < n:
        run, repeat = runs[i], above[i]
        if max(run, repeat) >= 3:
            length, code = (repeat, row_code) if repeat > run else (run, one_code)
            symbol, extra, extra_value = _LENGTHS[length]
            put(*_LITERALS[symbol])
            if extra:
                put(extra_value, extra)
            distance_bits, distance_extra, distance_value = code
            put(distance_bits, 5)
            if distance_extra:
                put(distance_value, distance_extra)
            i += length
        else:
            put(*_LITERALS[values[i]])
            i += 1
    put(*_LITERALS[256])  # end of block
    if filled:
        put(0, 8 - filled)
    out += struct.pack(">I", zlib.adler32(data))
    return bytes(out)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode(pixels: np.ndarray, palette: Sequence[tuple[int, int, int]] | None = None) -> bytes:
    """PNG bytes of an image: (H, W) palette indices with `palette`, or (H, W, 3) RGB bytes.

    No time, gamma or text chunks: nothing but the pixels decides the bytes.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if palette is not None:
        if pixels.ndim != 2:
            raise ValueError("an indexed image is a 2-D array of palette indices")
        if not 1 <= len(palette) <= 256:
            raise ValueError(f"a palette holds 1..256 colours, got {len(palette)}")
        if int(pixels.max(initial=0)) >= len(palette):
            raise ValueError("a pixel refers to a colour beyond the palette")
        colour_type, channels = 3, 1
    else:
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError("an RGB image is an (H, W, 3) array")
        colour_type, channels = 2, 3
    height, width = pixels.shape[:2]
    if height < 1 or width < 1:
        raise ValueError("an image needs at least one pixel")
    rows = pixels.reshape(height, width * channels)
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows])  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    if palette is not None:
        parts.append(_chunk(b"PLTE", bytes(int(c) & 0xFF for rgb in palette for c in rgb)))
    parts.append(_chunk(b"IDAT", deflate(raw.tobytes(), row_length=raw.shape[1])))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
