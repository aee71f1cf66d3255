"""A node's printable label: device id, school, room and a QR code of the device id (a
technician or teacher scans it to open the node in the dashboard). SVG (any text,
Chinese included) and PNG at 300 dpi (Pillow; Chinese when a CJK font is installed)."""
from __future__ import annotations

import glob
import html
from dataclasses import dataclass
from pathlib import Path

import segno

from provisioning.errors import ProvisionError

# 50 x 30 mm: fits a standard thermal label and a 6 mm-high ceiling-mount lid.
LABEL_W_MM, LABEL_H_MM = 50, 30
DPI = 300
_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
          "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class Label:
    device_id: str
    school: str           # "S1 杭州市西湖区第一小学"
    room: str             # "A101 一年级(1)班"
    url: str | None = None   # what the QR holds; default the device id

    @property
    def qr_text(self) -> str:
        return self.url or self.device_id


def svg(label: Label) -> str:
    qr = segno.make(label.qr_text, error="m")
    n = qr.symbol_size(scale=1, border=0)[0]
    qr_mm = LABEL_H_MM - 6
    cell = qr_mm / n
    path = []
    for y, row in enumerate(qr.matrix):
        for x, dark in enumerate(row):
            if dark:
                path.append(f"M{3 + x * cell:.3f} {3 + y * cell:.3f}h{cell:.3f}v{cell:.3f}h{-cell:.3f}z")
    tx = 3 + qr_mm + 2
    esc = html.escape
    lines = [(6.5, 3.2, "bold", esc(label.device_id)), (13, 2.8, "normal", esc(label.school)),
             (19, 2.8, "normal", esc(label.room)), (26, 2.2, "normal", "CampusFleet")]
    text = "".join(f'<text x="{tx}" y="{y}" font-size="{size}" font-weight="{weight}">{t}</text>'
                   for y, size, weight, t in lines)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W_MM}mm" height="{LABEL_H_MM}mm" '
            f'viewBox="0 0 {LABEL_W_MM} {LABEL_H_MM}" font-family="Noto Sans CJK SC, DejaVu Sans, sans-serif">'
            f'<rect width="{LABEL_W_MM}" height="{LABEL_H_MM}" fill="#fff" stroke="#000" stroke-width="0.2"/>'
            f'<path d="{"".join(path)}" fill="#000"/>{text}</svg>')


def _font(size_px: int):
    from PIL import ImageFont
    for path in _FONTS + tuple(glob.glob("/usr/share/fonts/**/*CJK*.tt[cf]", recursive=True)):
        if Path(path).exists():
            return ImageFont.truetype(path, size_px), "CJK" in path or "wqy" in path
    return ImageFont.load_default(), False


def png(label: Label) -> bytes:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ProvisionError("PNG labels need Pillow: pip install 'campusfleet[provision]'") from None
    import io
    px = DPI / 25.4
    img = Image.new("L", (round(LABEL_W_MM * px), round(LABEL_H_MM * px)), 255)
    qr = segno.make(label.qr_text, error="m")
    n = qr.symbol_size(scale=1, border=0)[0]
    cell = int((LABEL_H_MM - 6) * px) // n
    ox = oy = round(3 * px)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(qr.matrix):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle([ox + x * cell, oy + y * cell, ox + (x + 1) * cell - 1, oy + (y + 1) * cell - 1], 0)
    tx = ox + n * cell + round(2 * px)
    big, cjk = _font(round(3.2 * px))
    small, _ = _font(round(2.8 * px))

    def shown(text: str) -> str:   # without a CJK font, keep the codes (ASCII) only
        return text if cjk or text.isascii() else text.split(" ", 1)[0]
    draw.text((tx, round(3.5 * px)), label.device_id, font=big, fill=0)
    draw.text((tx, round(10 * px)), shown(label.school), font=small, fill=0)
    draw.text((tx, round(16 * px)), shown(label.room), font=small, fill=0)
    draw.rectangle([0, 0, img.width - 1, img.height - 1], outline=0)
    out = io.BytesIO()
    img.save(out, "PNG", dpi=(DPI, DPI))
    return out.getvalue()


def write(label: Label, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path = out_dir / f"{label.device_id}.svg"
    svg_path.write_text(svg(label), "utf-8")
    png_path = out_dir / f"{label.device_id}.png"
    png_path.write_bytes(png(label))
    return [svg_path, png_path]
