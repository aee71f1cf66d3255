"""Labels: SVG with the device id, school, room and a QR code; a 300 dpi PNG; an A4
sheet PDF of many labels whose QR codes read back to the device ids' modules."""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import pytest
import segno
from PIL import Image

from provisioning.errors import ProvisionError
from provisioning.label import (LABELS_PER_PAGE, Label, png, qr_box_px, read_labels, sheet_pdf, sheet_slots_px, svg,
                                write, write_sheet)

LABEL = Label("cf-240ac4123456", "S1 杭州市西湖区第一小学", "A101 一年级(1)班")


def test_svg_label_carries_the_text_and_the_qr_modules_of_the_device_id():
    doc = ET.fromstring(svg(LABEL))
    texts = [t.text for t in doc.iter("{http://www.w3.org/2000/svg}text")]
    assert texts[:3] == ["cf-240ac4123456", "S1 杭州市西湖区第一小学", "A101 一年级(1)班"]
    path = next(doc.iter("{http://www.w3.org/2000/svg}path")).get("d")
    dark = sum(sum(1 for v in row if v) for row in segno.make("cf-240ac4123456", error="m").matrix)
    assert path.count("M") == dark
    assert doc.get("width") == "50mm" and doc.get("height") == "30mm"


def test_png_label_is_50_by_30_mm_at_300_dpi_with_a_quiet_zone_qr(tmp_path):
    img = Image.open(io.BytesIO(png(LABEL)))
    assert img.size == (591, 354) and round(img.info["dpi"][0]) == 300
    px = img.load()
    assert px[0, 0] == 0 and px[20, 20] == 255     # border line, then the quiet zone
    files = write(LABEL, tmp_path)
    assert [f.name for f in files] == ["cf-240ac4123456.svg", "cf-240ac4123456.png"]


def _page_images(pdf: bytes) -> list[Image.Image]:
    """The page images as the PDF holds them (Pillow writes each page as one JPEG stream)."""
    streams = re.findall(rb"stream\r?\n(\xff\xd8.*?\xff\xd9)\r?\nendstream", pdf, re.S)
    return [Image.open(io.BytesIO(s)).convert("L") for s in streams]


def _qr_modules(page: Image.Image, slot: tuple[int, int], label: Label) -> list[list[bool]]:
    """Reads the QR code's modules back off a rendered page: the centre of each module."""
    left, top, cell = qr_box_px(label)
    n = segno.make(label.qr_text, error="m").symbol_size(scale=1, border=0)[0]
    px = page.load()
    x0, y0 = slot[0] + left, slot[1] + top
    return [[px[x0 + x * cell + cell // 2, y0 + y * cell + cell // 2] < 128 for x in range(n)] for y in range(n)]


def test_sheet_pdf_puts_24_labels_on_each_a4_page_and_their_qr_codes_read_back(tmp_path):
    labels = [Label(f"cf-240ac41234{i:02x}", "S1 杭州市西湖区第一小学", f"A1{i:02d}") for i in range(LABELS_PER_PAGE + 3)]
    path = write_sheet(labels, tmp_path / "sheet.pdf", title="S1 cart 1")
    pdf = path.read_bytes()
    assert pdf.startswith(b"%PDF-") and re.findall(rb"/Count (\d+)", pdf) == [b"2"]
    assert len(re.findall(rb"/Type /Page\b", pdf)) == 2
    pages = _page_images(pdf)
    assert [p.size for p in pages] == [(2480, 3508)] * 2            # A4 at 300 dpi
    slots = sheet_slots_px()
    for i, label in enumerate(labels):
        page, slot = pages[i // LABELS_PER_PAGE], slots[i % LABELS_PER_PAGE]
        expected = [[bool(v) for v in row] for row in segno.make(label.qr_text, error="m").matrix]
        assert _qr_modules(page, slot, label) == expected, label.device_id
    # the 4th label of page 2 is empty paper; a label's QR is not its neighbour's
    assert pages[1].crop((*slots[3], slots[3][0] + 500, slots[3][1] + 300)).getextrema()[0] > 200
    assert _qr_modules(pages[0], slots[0], labels[0]) != _qr_modules(pages[0], slots[1], labels[0])


def test_sheet_of_one_label_is_one_page_and_no_labels_is_refused(tmp_path):
    pdf = sheet_pdf([LABEL])
    assert len(re.findall(rb"/Type /Page\b", pdf)) == 1
    with pytest.raises(ProvisionError, match="no labels"):
        sheet_pdf([])


def test_labels_from_a_batch_log_leave_out_failed_rows_and_repeat_runs(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("time,port,device_id,school,room,result,error\n"
                   "t1,/dev/ttyUSB0,cf-240ac4000001,S1,A101,provisioned,\n"
                   "t1,/dev/ttyUSB1,,S1,A102,failed,flashing failed\n"
                   "t2,/dev/ttyUSB0,cf-240ac4000001,S1,A101,\"done earlier, skipped\",\n"
                   "t2,/dev/ttyUSB1,cf-240ac4000002,S1,A102,provisioned,\n")
    assert read_labels(log) == [Label("cf-240ac4000001", "S1", "A101"), Label("cf-240ac4000002", "S1", "A102")]
    plain = tmp_path / "plain.csv"
    plain.write_text("cf-240ac4000003,S2,N1\n")
    assert read_labels(plain) == [Label("cf-240ac4000003", "S2", "N1")]
    plain.write_text("cf-XYZ,S2,N1\n")
    with pytest.raises(ProvisionError, match="is not cf-<12"):
        read_labels(plain)
