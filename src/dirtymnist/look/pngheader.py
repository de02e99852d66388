"""A PNG's size and pixel format from its IHDR chunk, read before any decode (decompression bombs).

A 400 KB PNG may claim 20000x20000 pixels: decoding it first allocates 400 MB and more. The
header says so in its first 33 bytes, so uploads are checked here and only a 256x256 8-bit
grayscale image ever reaches the decoder (64 KB of pixels). `minimal_png` then checks the
whole file (chunk CRCs, the inflated pixels' length and row filters) and keeps only what the
decoder needs, so libpng has nothing left to complain about on stderr.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from dirtymnist import layout
from dirtymnist.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# colour type -> (channels the decoder returns, what to call it)
COLOUR_TYPES = {0: (1, "grayscale"), 2: (3, "RGB"), 3: (3, "indexed-colour"), 4: (4, "grey + alpha"),
                6: (4, "RGBA")}


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int

    @property
    def channels(self) -> int:
        return COLOUR_TYPES[self.colour_type][0]


def read_header(data: bytes, name: str) -> PngHeader:
    """The IHDR fields of `data`; DataError naming `name` unless it starts like a PNG."""
    if not data:
        raise DataError(f"{name}: empty upload (no bytes received)")
    if not data.startswith(PNG_MAGIC):
        raise DataError(f"{name}: not a PNG file")
    if len(data) < 33:  # magic (8) + length (4) + "IHDR" (4) + 13 fields + CRC (4)
        raise DataError(f"{name}: not a readable image (PNG cut short before its header ends)")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise DataError(f"{name}: not a readable image (PNG without its IHDR header first)")
    fields = data[16:29]
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise DataError(f"{name}: not a readable image (corrupt PNG header)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fields)
    if colour not in COLOUR_TYPES:
        raise DataError(f"{name}: not a readable image (PNG colour type {colour})")
    return PngHeader(width, height, depth, colour, interlace)


def idat_bytes(data: bytes, name: str) -> int:
    """Total length of the IDAT chunks (the compressed pixels), walking the chunk list."""
    total, pos = 0, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            total += length
        elif kind == b"IEND":
            break
        pos += 12 + length
    return total


def check_header(data: bytes, name: str) -> PngHeader:
    """`read_header`, and refuse anything but a 256x256 8-bit grayscale PNG, before decoding;
    also one whose compressed pixels are far more than such an image can need (a header that
    says 256x256 over an IDAT that inflates to gigabytes)."""
    head = read_header(data, name)
    size = layout.IMAGE_SIZE
    if (head.width, head.height) != (size, size):
        raise DataError(f"{name}: size {head.width}x{head.height}, expected {size}x{size}")
    if head.bit_depth == 16:
        raise DataError(f"{name}: uint16 pixels (16-bit), expected 8-bit grayscale")
    if head.channels != 1:
        what = COLOUR_TYPES[head.colour_type][1]
        raise DataError(f"{name}: colour image ({head.channels} channels), PNG colour type {what}; the models "
                        f"read 8-bit grayscale like the competition's images")
    raw = size * (1 + (size * head.bit_depth + 7) // 8)  # filter byte + packed row, per row
    if idat_bytes(data, name) > 2 * raw + 1024:  # stored (uncompressed) deflate needs raw + 0.1 %
        raise DataError(f"{name}: not a readable image (more compressed pixel data than a "
                        f"{size}x{size} image holds)")
    return head


def minimal_png(data: bytes, name: str) -> bytes:
    """The PNG of `data` (passed `check_header`) reduced to IHDR, one IDAT and IEND, once every
    chunk's CRC, the zlib stream and each row's filter byte are checked: a file libpng decodes
    without a warning or an error (none of its messages reach stderr). DataError naming `name`
    when any check fails."""
    head, pos, idat = read_header(data, name), 8, []
    while True:
        if pos + 12 > len(data):
            raise DataError(f"{name}: not a readable image (PNG cut short, no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(data[pos + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            raise DataError(f"{name}: not a readable image (PNG chunk {kind!r} cut short or corrupt)")
        if kind == b"IDAT":
            idat.append(data[pos + 8:end - 4])
        elif kind == b"IEND":
            break
        elif not kind[:1].islower() and kind not in (b"IHDR", b"PLTE"):  # an unknown critical chunk
            raise DataError(f"{name}: not a readable image (PNG chunk {kind!r})")
        pos = end
    compressed = b"".join(idat)
    rows = _row_lengths(head)
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(compressed, sum(rows) + 1)
    except zlib.error:
        raise DataError(f"{name}: not a readable image (corrupt PNG pixel data)") from None
    if len(raw) != sum(rows) or not inflate.eof or inflate.unconsumed_tail:
        raise DataError(f"{name}: not a readable image (PNG pixel data of the wrong length)")
    at = 0
    for n in rows:
        if raw[at] > 4:
            raise DataError(f"{name}: not a readable image (PNG row filter {raw[at]})")
        at += n
    return PNG_MAGIC + data[8:33] + _chunk(b"IDAT", compressed) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _row_lengths(head: PngHeader) -> list[int]:
    """Bytes of each filtered row (filter byte + packed pixels) of a grayscale image, Adam7 passes too."""
    def row(width: int) -> int:
        return 1 + (width * head.bit_depth + 7) // 8

    if head.interlace == 0:
        return [row(head.width)] * head.height
    out = []
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        w, h = (head.width - x0 + dx - 1) // dx, (head.height - y0 + dy - 1) // dy
        if w and h:
            out += [row(w)] * h
    return out
