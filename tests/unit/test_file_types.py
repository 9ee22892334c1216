"""The attachment detector (infra.content.file_types): a file's kind is what its bytes are, never
its name or claimed type; executables, markup, archives and decompression bombs are refused with
words saying what was found; display names are safe to show and never a path."""

from __future__ import annotations

import io
import re
import struct
import zipfile

import pytest

from blocks.api.approvals.attachments import content_disposition
from blocks.infra.content.file_types import (
    ALL_KINDS,
    FileKind,
    FileRefused,
    check_allowed,
    detect,
    display_name,
    refusal,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
# A PE: the DOS header's e_lfanew (offset 0x3c) points at the "PE\0\0" signature.
PE = b"MZ" + b"\x90\x00" * 29 + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 100


def minimal_pdf() -> bytes:
    """A small valid PDF: one empty page, a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def ooxml(parts: dict[str, bytes], *, content_types: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if content_types:
            archive.writestr("[Content_Types].xml", b"<Types/>")
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """A docx-looking ZIP whose one part is 200 MB of zeros (about 200 KB compressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("word/document.xml", b"<w:document/>")
        info = zipfile.ZipInfo("word/media/zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w") as member:
            chunk = bytes(1024 * 1024)
            for _ in range(200):
                member.write(chunk)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "name", "kind"),
    [
        (minimal_pdf(), "x.bin", FileKind.PDF),
        (PNG, "photo.pdf", FileKind.PNG),
        (JPEG, "scan", FileKind.JPEG),
        ("Grüße, total 12 €\n".encode(), "notes.txt", FileKind.TEXT),
        (b"\xef\xbb\xbfa,b\n1,2\n", "rows.csv", FileKind.CSV),
        (ooxml({"word/document.xml": b"<w/>"}), "c.docx", FileKind.DOCX),
        (ooxml({"xl/workbook.xml": b"<x/>"}), "c.bin", FileKind.XLSX),
        (ooxml({"ppt/presentation.xml": b"<p/>"}), "c", FileKind.PPTX),
    ],
)
def test_accepted_kinds_are_decided_by_the_bytes(content: bytes, name: str, kind: FileKind) -> None:
    assert detect(content, name=name).kind is kind


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (PE, "Windows executable (PE)"),
        (ELF, "Linux executable (ELF)"),
        (b"\xcf\xfa\xed\xfe" + b"\x00" * 64, "Mach-O"),
        (b"#!/bin/sh\nrm -rf /\n", "script"),
        (b"<!DOCTYPE html><html><script>alert(1)</script>", "HTML"),
        (b"  \n<HTML><body>hi</body></HTML>", "HTML"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG"),
        (b'<?xml version="1.0"?><a/>', "XML"),
        (ooxml({"a.txt": b"hello"}), "ZIP archive"),
        (ooxml({"word/document.xml": b"<w/>", "word/vbaProject.bin": b"x"}), "macros"),
        (ooxml({"word/document.xml": b"<w/>"}, content_types=False), "ZIP archive"),
        (b"", "empty"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip"),
        (b"7z\xbc\xaf\x27\x1c" + b"\x00" * 20, "7z"),
        (b"Rar!\x1a\x07\x00" + b"\x00" * 20, "rar"),
        (b"GIF89a" + b"\x00" * 20, "gif"),
        ("text".encode("utf-16"), "NUL"),
        (b"caf\xe9 latin-1", "UTF-8"),
        (b"PK\x03\x04 truncated zip", "damaged ZIP"),
    ],
)
def test_refusals_say_what_was_found(content: bytes, words: str) -> None:
    with pytest.raises(FileRefused, match=re.escape(words)):
        detect(content, name="invoice.pdf")


def test_a_pe_named_invoice_pdf_and_sent_as_pdf_is_called_what_it_is() -> None:
    with pytest.raises(FileRefused) as refused:
        detect(PE, name="invoice.pdf")
    words = refusal(refused.value, "application/pdf")
    assert words.startswith("not a PDF as sent (application/pdf)")
    assert "Windows executable (PE)" in words


def test_html_sent_as_png_is_not_a_png() -> None:
    with pytest.raises(FileRefused) as refused:
        detect(b"<html><body><script>alert(1)</script></body></html>", name="cat.png")
    assert refusal(refused.value, "image/png") == (
        "not a PNG as sent (image/png): the file is HTML (<html...), which is not allowed"
    )


def test_a_zip_bomb_is_refused_from_its_directory() -> None:
    bomb = zip_bomb()
    assert len(bomb) < 1024 * 1024  # 200 MB packed into a few hundred KB
    with pytest.raises(FileRefused, match="decompression bomb"):
        detect(bomb)


def test_too_many_parts_is_refused() -> None:
    parts = {f"word/p{i}.xml": b"" for i in range(2_001)}
    with pytest.raises(FileRefused, match="more than 2000"):
        detect(ooxml(parts))


def test_the_allow_list_narrows_the_kinds() -> None:
    detected = detect(PNG)
    check_allowed(detected, ALL_KINDS)
    with pytest.raises(FileRefused, match="does not accept"):
        check_allowed(detected, frozenset({FileKind.PDF}))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\invoice.pdf", "invoice.pdf"),
        ("in\x00voice\r\n.pdf", "invoice.pdf"),
        ("evil\u202egpj.exe", "evilgpj.exe"),  # a right-to-left override hides the real extension
        ('a"b<c>.pdf', "abc.pdf"),
        ("", "attachment"),
        (None, "attachment"),
        ("...", "attachment"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_display_names_are_safe_and_never_paths(raw: str | None, shown: str) -> None:
    assert display_name(raw) == shown


def test_content_disposition_is_ascii_with_the_exact_name_encoded() -> None:
    header = content_disposition(display_name('Résumé "final"; v2.pdf'))
    assert header == (
        'attachment; filename="R_sum_ final; v2.pdf"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20final%3B%20v2.pdf"
    )
    header.encode("ascii")  # a header value Starlette can send
