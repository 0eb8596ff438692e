"""Media: streamed uploads, sniffed types, content-addressed storage, thumbnails.

Bytes live at `<media dir>/<sha[:2]>/<sha>`, so identical uploads share one
file; each upload still gets its own row (uploader, display filename, type).
Uploads stream through a temporary file in `<media dir>/tmp/` while being hashed
and are renamed into place only when complete; thumbnails are cached under
`<media dir>/thumbs/`. All file I/O, hashing and Pillow work runs in the media
executor, never on the event loop (DESIGN.md invariant 7).

Modules: store (directories, executor, spooling, placing blobs), sniffing
(content types from magic numbers, image headers), ingest (a multipart body
into the store), serving (files with ETag and Range), thumbnails, and the
route handlers.

Decisions where API.md is silent:
- Images over MAX_IMAGE_PIXELS, and bytes that look like an image but Pillow
  cannot read, are stored as `application/octet-stream` with null dimensions:
  still downloadable (as an attachment), never decoded, no thumbnail.
- Empty files are `application/octet-stream`; HTML and SVG are at most text/plain.
"""

from __future__ import annotations

from .handlers import download, thumbnail, upload
from .store import MediaStore, media_store

__all__ = ["MediaStore", "download", "media_store", "thumbnail", "upload"]
