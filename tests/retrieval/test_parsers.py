"""Every listed format parsed from real files; encodings; corrupt and unsupported files."""

from __future__ import annotations

import codecs
import io
import zipfile

import pytest

from spindle.retrieval.errors import IngestError
from spindle.retrieval.parsers import FORMATS, format_of, parse
from tests.retrieval.docgen import make_doc, make_docx, make_pdf, make_pptx

FACT = "the quartermaster keeps 7421 lanterns"

TEXT_SAMPLES = {
    "c": f'#include <stdio.h>\n/* {FACT} */\nint main(void) {{ return 0; }}\n',
    "cs": f'// {FACT}\nclass Program {{ static void Main() {{}} }}\n',
    "cpp": f'#include <vector>\n// {FACT}\nint main() {{ std::vector<int> v; }}\n',
    "go": f'package main\n\n// {FACT}\nfunc main() {{}}\n',
    "java": f'/** {FACT} */\npublic class Main {{ }}\n',
    "json": f'{{"note": "{FACT}", "n": 1}}\n',
    "md": f"# Title\n\nSome *markdown*: {FACT}.\n",
    "php": f'<?php\n// {FACT}\necho "hi";\n',
    "py": f'"""{FACT}"""\nprint("hi")\n',
    "rb": f"# {FACT}\nputs 'hi'\n",
    "tex": f"\\documentclass{{article}}\\begin{{document}}{FACT}\\end{{document}}\n",
    "txt": f"Plain text: {FACT}.\n",
    "css": f"/* {FACT} */\nbody {{ color: red; }}\n",
    "js": f"// {FACT}\nconsole.log('hi');\n",
    "sh": f"#!/bin/sh\n# {FACT}\necho hi\n",
    "ts": f"// {FACT}\nconst x: number = 1;\n",
}


def sample_file(ext: str, fact: str = FACT) -> bytes:
    """A real file of type ``ext`` whose text contains ``fact``."""
    if ext in TEXT_SAMPLES:
        return TEXT_SAMPLES[ext].replace(FACT, fact).encode("utf-8")
    if ext == "html":
        return (
            f"<html><head><title>T</title><style>p{{color:red}}</style><script>var secret='nope';</script>"
            f"</head><body><h1>Heading</h1><p>{fact}</p></body></html>"
        ).encode()
    if ext == "pdf":
        return make_pdf([["Cover page"], ["Second page says:", fact]])
    if ext == "docx":
        return make_docx(["Intro paragraph.", fact], table=[["k", "v"], ["cell", "value"]])
    if ext == "pptx":
        return make_pptx([("Slide title", fact)], notes="speaker notes here")
    if ext == "doc":
        return make_doc(f"Legacy document.\n{fact}\nEnd.")
    raise AssertionError(ext)


def test_every_listed_format_is_known() -> None:
    listed = "c cs cpp doc docx go html java json md pdf php pptx py rb tex txt css js sh ts".split()
    assert sorted(FORMATS) == sorted(listed)
    assert format_of("REPORT.PDF") is not None and format_of("a/b/c.Md") is not None


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_each_format_yields_its_text(ext: str) -> None:
    text = parse(f"sample.{ext}", sample_file(ext))
    assert FACT in " ".join(text.split())


def test_html_drops_scripts_and_styles() -> None:
    text = parse("page.html", sample_file("html"))
    assert "nope" not in text and "color" not in text and "Heading" in text


def test_docx_tables_and_pptx_notes() -> None:
    assert "cell | value" in parse("a.docx", sample_file("docx"))
    slides = parse("a.pptx", sample_file("pptx"))
    assert "Slide 1" in slides and "speaker notes here" in slides


@pytest.mark.parametrize(
    "raw",
    [
        FACT.encode("ascii"),
        codecs.BOM_UTF8 + FACT.encode("utf-8"),
        codecs.BOM_UTF16_LE + FACT.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + FACT.encode("utf-16-be"),
        FACT.encode("utf-16-le"),
        FACT.encode("utf-16-be"),
    ],
    ids=["ascii", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le", "utf16be"],
)
def test_text_encodings(raw: bytes) -> None:
    assert parse("notes.txt", raw).strip() == FACT


def test_non_ascii_utf8_and_utf16() -> None:
    text = "Zoë's café — 東京 🎉"
    assert parse("a.md", text.encode("utf-8")) == text
    assert parse("a.md", codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text
    assert parse("a.txt", b"line1\r\nline2") == "line1\nline2"


def _code(ext: str, data: bytes) -> str:
    with pytest.raises(IngestError) as info:
        parse(f"file.{ext}", data)
    return info.value.code


def test_other_encodings_and_binaries_are_invalid() -> None:
    assert _code("txt", "Zoë café".encode("latin-1")) == "invalid_file"
    assert _code("py", bytes(range(256)) * 8) == "invalid_file"
    assert _code("txt", b"") == "invalid_file"
    assert _code("md", b"  \n\t\n ") == "invalid_file"
    assert _code("txt", b"\xff\xfe\x00\xd8") == "invalid_file"  # lone surrogate in UTF-16


def test_corrupt_office_and_pdf_files_are_invalid() -> None:
    pdf = sample_file("pdf")
    docx = sample_file("docx")
    assert _code("pdf", b"%PDF-1.4\n garbage garbage") == "invalid_file"
    assert _code("pdf", b"not a pdf at all") == "invalid_file"
    assert _code("pdf", pdf[: len(pdf) // 3]) in ("invalid_file",)
    assert _code("pdf", make_pdf([[], []])) == "invalid_file"  # pages without text (a scan)
    assert _code("docx", docx[: len(docx) // 2]) == "invalid_file"
    assert _code("docx", b"PK\x03\x04 broken zip") == "invalid_file"
    assert _code("pptx", sample_file("docx")) == "invalid_file"  # a zip, but not a presentation
    assert _code("doc", b"plain text pretending to be a doc") == "invalid_file"
    assert _code("doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600) == "invalid_file"


def test_docx_missing_main_part_is_invalid() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    assert _code("docx", buffer.getvalue()) == "invalid_file"


def test_encrypted_pdf_is_invalid() -> None:
    import pypdf  # a test dependency (pyproject "test" extra)

    reader = pypdf.PdfReader(io.BytesIO(sample_file("pdf")))
    writer = pypdf.PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(IngestError) as info:
        parse("locked.pdf", out.getvalue())
    assert info.value.code == "invalid_file" and "encrypted" in info.value.message


@pytest.mark.parametrize("name", ["image.png", "archive.zip", "README", "data.xlsx", "notes.pdf.bak"])
def test_unlisted_types_are_unsupported(name: str) -> None:
    with pytest.raises(IngestError) as info:
        parse(name, b"whatever")
    assert info.value.code == "unsupported_file"


# -- content that is not what its name says; encodings (issue 7, item 9) -----------------------

BODY = "The harbour office opens at eight and closes at noon on Sundays.\n" * 3


@pytest.mark.parametrize(
    "raw",
    [
        codecs.BOM_UTF16_LE + BODY.encode("utf-16-be"),
        codecs.BOM_UTF16_BE + BODY.encode("utf-16-le"),
        codecs.BOM_UTF16_LE + ("東京都の天気は晴れです。" * 20).encode("utf-16-be"),
    ],
    ids=["le-bom-be-body", "be-bom-le-body", "cjk-le-bom-be-body"],
)
def test_a_bom_contradicting_the_body_is_invalid(raw: bytes) -> None:
    with pytest.raises(IngestError) as info:
        parse("notes.txt", raw)
    assert info.value.code == "invalid_file" and "byte-order mark" in info.value.message


def test_cjk_utf16_with_its_own_bom_still_reads() -> None:
    text = "東京都の天気は晴れです。" * 20
    assert parse("a.txt", codecs.BOM_UTF16_BE + text.encode("utf-16-be")) == text
    assert parse("a.txt", codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text


@pytest.mark.parametrize("name", ["paper.md", "notes.txt", "script.py", "page.html", "main.go"])
def test_binary_formats_under_a_text_name_are_invalid(name: str) -> None:
    for data, what in ((sample_file("pdf"), "PDF"), (sample_file("docx"), "ZIP"),
                       (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG")):
        with pytest.raises(IngestError) as info:
            parse(name, data)
        assert info.value.code == "invalid_file" and what in info.value.message, (name, what)


def test_text_about_pdf_syntax_is_still_text() -> None:
    text = "# PDF internals\n\nA file starts with `%PDF-1.7`, then `1 0 obj ... endobj`.\n"
    assert parse("pdf.md", text.encode()) == text


WESTERN = "<html><head><title>Carta</title></head><body><p>Le café est très bon.</p><p>El niño y la piña.</p></body></html>"


def test_html_encodings_follow_the_html_rules() -> None:
    expected = "Carta\nLe café est très bon.\nEl niño y la piña."
    assert parse("a.html", WESTERN.encode("cp1252")) == expected  # no charset: detected, windows-1252
    assert parse("a.html", WESTERN.encode("utf-8")) == expected
    assert parse("a.html", codecs.BOM_UTF16_LE + WESTERN.encode("utf-16-le")) == expected
    declared = '<meta charset="iso-8859-2">' + WESTERN.replace("très", "łódź").replace("niño y la piña", "Kraków")
    assert "łódź" in parse("a.html", declared.encode("iso8859_2")) and "Kraków" in parse("a.html", declared.encode("iso8859_2"))
    http_equiv = '<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    russian = http_equiv + "<p>Привет, как дела?</p>"
    assert "Привет, как дела?" in parse("a.html", russian.encode("cp1251"))
    # latin-1 declared means windows-1252 in HTML: 0x80 is the euro sign
    assert "€" in parse("a.html", b'<meta charset="iso-8859-1"><p>Price: 5 \x80</p>')
    undeclared = "<p>" + "Это тестовая страница на русском языке, и она довольно длинная. " * 4 + "</p>"
    assert "русском языке" in parse("a.html", undeclared.encode("cp1251"))


def test_go_files_are_read() -> None:
    assert format_of("main.go") is not None and format_of("main.go").mime_type == "text/x-golang"
    assert "quartermaster" in parse("main.go", sample_file("go"))


# -- sizes checked before expanding (issue 7, item 8) --------------------------------------------


def test_zip_packages_are_measured_before_they_are_expanded() -> None:
    from spindle.retrieval.parsers import ParseLimits
    from tests.retrieval.hostile import zip_bomb

    assert "quartermaster" not in parse("ok.docx", zip_bomb("docx", 3 << 20)) or True  # a large part that is fine
    assert len(parse("ok.docx", zip_bomb("docx", 3 << 20))) >= 3 << 20
    for kind in ("docx", "pptx"):
        assert _code(kind, zip_bomb(kind, 1 << 30)) == "invalid_file"  # declared size over the limit
        with pytest.raises(IngestError) as info:
            parse(f"a.{kind}", zip_bomb(kind, 300 << 20))  # under the limit, but a 1000-fold part
        assert "zip bomb" in info.value.message
    with pytest.raises(IngestError) as info:  # the directory lies about the size
        parse("a.docx", zip_bomb("docx", 700 << 20, declared=4096))
    assert "size limit" in info.value.message
    with pytest.raises(IngestError) as info:
        parse("a.docx", zip_bomb("docx", 8 << 20, declared=4096))
    assert "does not have the size" in info.value.message
    with pytest.raises(IngestError) as info:
        parse("a.docx", zip_bomb("docx", 3 << 20), ParseLimits(max_unzipped=1 << 20))
    assert "expand" in info.value.message


def test_text_longer_than_the_limit_is_refused_before_decoding() -> None:
    from spindle.retrieval.parsers import ParseLimits

    with pytest.raises(IngestError) as info:
        parse("a.txt", b"word " * 1000, ParseLimits(max_chars=1000))
    assert "characters" in info.value.message
    with pytest.raises(IngestError) as info:
        parse("a.pdf", make_pdf([["one line of text"]] * 50), ParseLimits(max_chars=100))
    assert "characters" in info.value.message


def test_a_pdf_page_tree_bomb_is_stopped_by_its_text_to_size_ratio() -> None:
    from tests.retrieval.hostile import pdf_page_tree_bomb

    with pytest.raises(IngestError) as info:
        parse("pages.pdf", pdf_page_tree_bomb())
    assert info.value.code == "invalid_file" and "page-tree bomb" in info.value.message
    assert "of 100,000" in info.value.message
