"""What an uploaded file is, decided by its bytes (magic numbers, through `filetype`), never by its
name or the Content-Type the client sent; and whether Blocks keeps it.

Kept: PDF, PNG, JPEG, plain text and CSV (UTF-8, no NUL, not markup), Office documents (OOXML
containers whose ZIP directory says so and is no decompression bomb, and the legacy OLE formats).
Refused, naming what was found: executables (PE, ELF, Mach-O, scripts), HTML/SVG/XML, any other
archive, and anything unrecognised. A display name is derived from the client's file name; it is
shown and sent in Content-Disposition, never used as a path.
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
from dataclasses import dataclass
from enum import StrEnum

import filetype


class FileKind(StrEnum):
    PDF = "pdf"
    PNG = "png"
    JPEG = "jpeg"
    TEXT = "text"
    CSV = "csv"
    DOCX = "docx"
    XLSX = "xlsx"
    PPTX = "pptx"
    DOC = "doc"
    XLS = "xls"
    PPT = "ppt"


ALL_KINDS = frozenset(FileKind)
MEDIA_TYPES: dict[FileKind, str] = {
    FileKind.PDF: "application/pdf",
    FileKind.PNG: "image/png",
    FileKind.JPEG: "image/jpeg",
    FileKind.TEXT: "text/plain; charset=utf-8",
    FileKind.CSV: "text/csv; charset=utf-8",
    FileKind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    FileKind.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    FileKind.PPTX: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    FileKind.DOC: "application/msword",
    FileKind.XLS: "application/vnd.ms-excel",
    FileKind.PPT: "application/vnd.ms-powerpoint",
}
_DESCRIBED: dict[FileKind, str] = {
    FileKind.PDF: "a PDF",
    FileKind.PNG: "a PNG",
    FileKind.JPEG: "a JPEG",
    FileKind.TEXT: "plain text",
    FileKind.CSV: "CSV text",
    FileKind.DOCX: "a Word document",
    FileKind.XLSX: "an Excel workbook",
    FileKind.PPTX: "a PowerPoint presentation",
    FileKind.DOC: "a Word 97-2003 document",
    FileKind.XLS: "an Excel 97-2003 workbook",
    FileKind.PPT: "a PowerPoint 97-2003 presentation",
}
# What the client may claim, to say "sent as image/png, but ..." in a refusal.
_CLAIMED_KIND: dict[str, FileKind] = {
    media.split(";")[0]: kind for kind, media in MEDIA_TYPES.items()
} | {"image/jpg": FileKind.JPEG}
_BY_FILETYPE: dict[str, FileKind] = {
    "pdf": FileKind.PDF,
    "png": FileKind.PNG,
    "jpg": FileKind.JPEG,
    "doc": FileKind.DOC,
    "xls": FileKind.XLS,
    "ppt": FileKind.PPT,
}
_ZIP_LIKE = frozenset({"zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub"})
_EXECUTABLES = {
    "exe": "a Windows executable (PE)",
    "elf": "a Linux executable (ELF)",
    "wasm": "a WebAssembly module",
    "swf": "a Flash file",
    "crx": "a browser extension",
    "rpm": "a package (RPM)",
    "deb": "a package (Debian)",
}
_MACH_O = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
# Markup a browser (or a viewer) would run or parse as a document, near the start of "text".
_MARKUP = ("<html", "<!doctype", "<script", "<svg", "<?xml", "<body", "<iframe", "<head")
_MARKUP_WINDOW = 1024
_BOM = b"\xef\xbb\xbf"
# The ZIP directory of an Office document (never extracted): limits against decompression bombs.
MAX_ZIP_MEMBERS = 2_000
MAX_ZIP_UNCOMPRESSED = 100 * 1024 * 1024
MAX_ZIP_RATIO = 100
# A member this small cannot be a bomb whatever its ratio (an XML part of 1 KiB packs to 20 B).
_RATIO_FROM_BYTES = 1024 * 1024
_OOXML_PARTS = {"word/": FileKind.DOCX, "xl/": FileKind.XLSX, "ppt/": FileKind.PPTX}
MAX_NAME_LENGTH = 200


class FileRefused(ValueError):
    """The bytes are not a kind Blocks keeps; the message says what they are and why."""


@dataclass(frozen=True)
class DetectedFile:
    kind: FileKind
    media_type: str


def detect(content: bytes, *, name: str = "") -> DetectedFile:
    """The kind of `content` by its bytes; FileRefused naming what was found otherwise.

    `name` only chooses between plain text and CSV (the bytes cannot tell them apart).
    """
    kind = _kind(content, name)
    return DetectedFile(kind=kind, media_type=MEDIA_TYPES[kind])


def check_allowed(detected: DetectedFile, allowed: frozenset[FileKind]) -> None:
    if detected.kind not in allowed:
        raise FileRefused(
            f"the file is {_DESCRIBED[detected.kind]}, which this organization does not accept "
            f"(it accepts: {', '.join(sorted(allowed)) or 'none'})"
        )


def refusal(error: FileRefused, declared_type: str) -> str:
    """The refusal's words, saying what the client claimed when the bytes say otherwise."""
    claimed = _CLAIMED_KIND.get(declared_type.split(";")[0].strip().lower())
    if claimed is None:
        return str(error)
    return f"not {_DESCRIBED[claimed]} as sent ({declared_type.split(';')[0].strip()}): {error}"


def _kind(content: bytes, name: str) -> FileKind:
    if not content:
        raise FileRefused("the file is empty")
    head = content[:8192]
    if head.startswith(_MACH_O) or head.startswith(b"\xca\xfe\xba\xbe"):
        raise FileRefused("the file is a macOS executable (Mach-O), which is not allowed")
    guess = filetype.guess(head)
    if guess is not None:
        if guess.extension in _EXECUTABLES:
            raise FileRefused(f"the file is {_EXECUTABLES[guess.extension]}, which is not allowed")
        if guess.extension in _BY_FILETYPE:
            return _BY_FILETYPE[guess.extension]
        if guess.extension in _ZIP_LIKE:
            return _office_zip(content)
        raise FileRefused(
            f"the file is {guess.mime} ({guess.extension}), which is not an accepted kind"
        )
    return _text(content, name)


def _office_zip(content: bytes) -> FileKind:
    """An OOXML document by its ZIP directory, checked against bombs without extracting."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
    # Hostile bytes reach zipfile's parser: whatever it raises on them is a damaged archive.
    except Exception as error:
        raise FileRefused(f"the file is a damaged ZIP archive ({error})") from None
    names = {member.filename for member in members}
    kind = next(
        (k for prefix, k in _OOXML_PARTS.items() if any(n.startswith(prefix) for n in names)),
        None,
    )
    if "[Content_Types].xml" not in names or kind is None:
        raise FileRefused(
            "the file is a ZIP archive (not an Office document); archives are refused"
        )
    if any(name.lower().endswith("vbaproject.bin") for name in names):
        raise FileRefused("the Office document carries macros (vbaProject.bin), which are refused")
    if len(members) > MAX_ZIP_MEMBERS:
        raise FileRefused(
            f"the Office document has {len(members)} parts, more than {MAX_ZIP_MEMBERS} "
            "(a decompression bomb?)"
        )
    total = sum(member.file_size for member in members)
    if total > MAX_ZIP_UNCOMPRESSED:
        raise FileRefused(
            f"the Office document unpacks to {total} bytes, more than {MAX_ZIP_UNCOMPRESSED} "
            "(a decompression bomb)"
        )
    if total > _RATIO_FROM_BYTES and total > MAX_ZIP_RATIO * len(content):
        raise FileRefused(
            f"the Office document unpacks to {total // max(len(content), 1)} times its size, more "
            f"than {MAX_ZIP_RATIO} (a decompression bomb)"
        )
    for member in members:
        if member.flag_bits & 0x1:
            raise FileRefused(f"the Office document's part {member.filename!r} is encrypted")
        if member.file_size > _RATIO_FROM_BYTES and member.file_size > MAX_ZIP_RATIO * max(
            member.compress_size, 1
        ):
            raise FileRefused(
                f"the Office document's part {member.filename!r} unpacks to "
                f"{member.file_size // max(member.compress_size, 1)} times its size, more than "
                f"{MAX_ZIP_RATIO} (a decompression bomb)"
            )
    return kind


def _text(content: bytes, name: str) -> FileKind:
    if b"\x00" in content:
        raise FileRefused("the file is binary data of an unknown kind (it has NUL bytes)")
    try:
        text = content.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefused(
            f"the file is neither a recognised kind nor UTF-8 text (byte {error.start})"
        ) from None
    start = text[:_MARKUP_WINDOW].lstrip().lower()
    found = next((marker for marker in _MARKUP if marker in start), None)
    if found is not None:
        what = "SVG" if found == "<svg" else "XML" if found == "<?xml" else "HTML"
        raise FileRefused(f"the file is {what} ({found}...), which is not allowed")
    if start.startswith("#!"):
        raise FileRefused("the file is a script (#!), which is not allowed")
    return FileKind.CSV if name.lower().endswith(".csv") else FileKind.TEXT


def display_name(raw: str | None, *, fallback: str = "attachment") -> str:
    """A name fit to show and to send in Content-Disposition: its last path part, without control
    or format characters, at most MAX_NAME_LENGTH characters (the extension kept)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in '"<>|:*?'
    ).strip(" .")
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            name = f"{stem[: MAX_NAME_LENGTH - len(extension) - 1]}.{extension}"
        else:
            name = name[:MAX_NAME_LENGTH]
    return name or fallback
