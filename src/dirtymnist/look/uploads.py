"""An upload's PNG bytes (a raw body or the `file` field of a multipart form) and its decode.

    curl --data-binary @50000.png -H 'Content-Type: image/png' 'http://127.0.0.1:7860/api/predict?name=50000.png'
    curl -F file=@50000.png http://127.0.0.1:7860/api/predict

Only a 256x256 8-bit grayscale PNG (`pngheader.check_header`) is decoded, so a decode never
allocates more than 64 KB of pixels; it runs off the event loop (`serve`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.errors import DataError
from dirtymnist.look.httpguard import FORM_TYPE
from dirtymnist.look.pngheader import check_header, minimal_png

MAX_UPLOAD_BYTES = 1 << 20  # a 256x256 8-bit PNG is at most ~66 KB: 16x room for metadata chunks
MULTIPART_SLACK = 16 << 10  # boundaries and part headers around the file of a form
RAW_TYPES = ("application/octet-stream", "image/png")


def safe_name(name: str | None, default: str = "upload.png") -> str:
    """A client's file name as shown back: its last path part, printable, at most 100 characters."""
    name = Path(str(name or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())[:100]
    return name or default


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def upload_png(body: bytes, content_type: str, name: str | None) -> tuple[bytes, str]:
    """(PNG bytes, shown name) of a request body: raw (`RAW_TYPES`) or a form (`FORM_TYPE`). A
    body without a Content-Type never gets here: `httpguard.Guard` answers it 415 (curl
    --data-binary without -H sends application/x-www-form-urlencoded, also a 415, with a hint)."""
    if media_type(content_type) != FORM_TYPE:
        return body, safe_name(name)
    data, filename = _form_file(body, content_type)
    return data, safe_name(name or filename)


def _form_file(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The first file part of a multipart/form-data body (curl -F file=@x.png): (bytes, filename)."""
    m = re.search(r'boundary="?([^";]{1,200})"?', content_type, flags=re.IGNORECASE)
    if not m:
        raise DataError("multipart upload without a boundary in its Content-Type")
    delimiter = b"--" + m.group(1).encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = head.decode("latin-1").lower()
        if "filename=" in disposition or 'name="file"' in disposition:
            filename = re.search(r'filename="([^"]*)"', head.decode("utf-8", "replace"))
            return content.removesuffix(b"\r\n"), filename.group(1) if filename else None
    raise DataError("multipart upload without a file field (send it as -F file=@image.png)")


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """(256, 256) uint8 of an uploaded PNG; DataError naming it unless 8-bit grey 256x256 PNG.
    The header is checked before the decoder sees a byte (decompression bombs), then the whole
    file (`minimal_png`): the decoder gets a PNG it reads without a message, so no stderr
    redirect is needed (one would hide the server's own log lines written meanwhile)."""
    import cv2

    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"{name}: {len(data)} bytes upload, more than {MAX_UPLOAD_BYTES} bytes "
                        f"({MAX_UPLOAD_BYTES >> 20} MB)")
    check_header(data, name)
    clean = minimal_png(data, name)
    try:
        img = cv2.imdecode(np.frombuffer(clean, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.dtype != np.uint8 or img.shape != (layout.IMAGE_SIZE, layout.IMAGE_SIZE):
        raise DataError(f"{name}: not a readable image (corrupt or not an 8-bit grayscale PNG)")
    return np.ascontiguousarray(img)
