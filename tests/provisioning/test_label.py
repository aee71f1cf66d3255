"""Labels: SVG with the device id, school, room and a QR code; a 300 dpi PNG."""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import segno
from PIL import Image

from provisioning.label import Label, png, svg, write

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
