"""A node's printable label: device id, school, room and a QR code of the device id (a
technician or teacher scans it to open the node in the dashboard). SVG (any text,
Chinese included), PNG at 300 dpi (Pillow; Chinese when a CJK font is installed), and
for a batch an A4 sheet PDF of many labels (SHEET_COLUMNS x SHEET_ROWS per page)."""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=64)
def _font(size_px: int):
    from PIL import ImageFont
    for path in _FONTS + tuple(glob.glob("/usr/share/fonts/**/*CJK*.tt[cf]", recursive=True)):
        if Path(path).exists():
            return ImageFont.truetype(path, size_px), "CJK" in path or "wqy" in path
    return ImageFont.load_default(), False


def _pillow():
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ProvisionError("PNG and PDF labels need Pillow: pip install 'campusfleet[provision]'") from None
    return Image, ImageDraw


def qr_box_px(label: Label) -> tuple[int, int, int]:
    """(left, top, module size) of the QR code on the label's 300 dpi image: where a
    scanner, or a test, finds its modules (quiet zone: the label's 3 mm margin)."""
    px = DPI / 25.4
    n = segno.make(label.qr_text, error="m").symbol_size(scale=1, border=0)[0]
    return round(3 * px), round(3 * px), int((LABEL_H_MM - 6) * px) // n


def image(label: Label):
    """The label as a Pillow image (mode L, 300 dpi): QR code left, text right, border."""
    Image, ImageDraw = _pillow()
    px = DPI / 25.4
    img = Image.new("L", (round(LABEL_W_MM * px), round(LABEL_H_MM * px)), 255)
    qr = segno.make(label.qr_text, error="m")
    n = qr.symbol_size(scale=1, border=0)[0]
    ox, oy, cell = qr_box_px(label)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(qr.matrix):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle([ox + x * cell, oy + y * cell, ox + (x + 1) * cell - 1, oy + (y + 1) * cell - 1], 0)
    tx = ox + n * cell + round(2 * px)
    room_px = img.width - tx - round(1.5 * px)          # up to 1.5 mm from the right edge
    cjk = _font(10)[1]

    def shown(text: str) -> str:   # without a CJK font, keep the codes (ASCII) only
        return text if cjk or text.isascii() else text.split(" ", 1)[0]

    def fitted(text: str, size_mm: float):
        """The font at size_mm, smaller if the text would run past the label's edge."""
        size = round(size_mm * px)
        while True:
            font = _font(size)[0]
            if size <= 12 or draw.textlength(text, font=font) <= room_px:
                return font
            size -= 2
    for y_mm, size_mm, text in ((3.5, 3.2, label.device_id), (10, 2.8, shown(label.school)),
                                (16, 2.8, shown(label.room))):
        draw.text((tx, round(y_mm * px)), text, font=fitted(text, size_mm), fill=0)
    draw.rectangle([0, 0, img.width - 1, img.height - 1], outline=0)
    return img


def png(label: Label) -> bytes:
    import io
    out = io.BytesIO()
    image(label).save(out, "PNG", dpi=(DPI, DPI))
    return out.getvalue()


# The batch sheet: A4 portrait, 3 x 8 labels of 50 x 30 mm with 5 mm / 3 mm gaps to
# cut along (each label keeps its own border line), centred on the page.
A4_W_MM, A4_H_MM = 210, 297
SHEET_COLUMNS, SHEET_ROWS = 3, 8
SHEET_GAP_X_MM, SHEET_GAP_Y_MM = 5, 3
LABELS_PER_PAGE = SHEET_COLUMNS * SHEET_ROWS


def sheet_slots_px() -> list[tuple[int, int]]:
    """Top-left pixel of each label slot on a 300 dpi A4 page, row by row."""
    px = DPI / 25.4
    block_w = SHEET_COLUMNS * LABEL_W_MM + (SHEET_COLUMNS - 1) * SHEET_GAP_X_MM
    block_h = SHEET_ROWS * LABEL_H_MM + (SHEET_ROWS - 1) * SHEET_GAP_Y_MM
    left, top = (A4_W_MM - block_w) / 2, (A4_H_MM - block_h) / 2
    return [(round((left + c * (LABEL_W_MM + SHEET_GAP_X_MM)) * px),
             round((top + r * (LABEL_H_MM + SHEET_GAP_Y_MM)) * px))
            for r in range(SHEET_ROWS) for c in range(SHEET_COLUMNS)]


def sheet_pages(labels: list[Label], title: str = "") -> list:
    """The labels laid out on A4 pages (Pillow images, 300 dpi), in the given order,
    with a footer line per page: the title and "page i of n"."""
    if not labels:
        raise ProvisionError("no labels to put on a sheet")
    Image, ImageDraw = _pillow()
    px = DPI / 25.4
    slots = sheet_slots_px()
    n_pages = -(-len(labels) // LABELS_PER_PAGE)
    footer, _ = _font(round(2.5 * px))
    pages = []
    for p in range(n_pages):
        page = Image.new("L", (round(A4_W_MM * px), round(A4_H_MM * px)), 255)
        for label, slot in zip(labels[p * LABELS_PER_PAGE:(p + 1) * LABELS_PER_PAGE], slots):
            page.paste(image(label), slot)
        text = f"{title}  ·  page {p + 1} of {n_pages}" if title else f"page {p + 1} of {n_pages}"
        if not text.isascii() and not _font(10)[1]:
            text = f"page {p + 1} of {n_pages}"
        ImageDraw.Draw(page).text((round(12 * px), round((A4_H_MM - 10) * px)), text, font=footer, fill=0)
        pages.append(page)
    return pages


def sheet_pdf(labels: list[Label], title: str = "") -> bytes:
    """A multi-page A4 PDF of the labels (one JPEG-coded 300 dpi image per page)."""
    import io
    pages = sheet_pages(labels, title)
    out = io.BytesIO()
    pages[0].save(out, "PDF", resolution=DPI, save_all=True, append_images=pages[1:],
                  title=title or "CampusFleet labels", creator="campus-provision")
    return out.getvalue()


def write_sheet(labels: list[Label], path: Path, title: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(sheet_pdf(labels, title))
    tmp.replace(path)
    return path


def write(label: Label, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path = out_dir / f"{label.device_id}.svg"
    svg_path.write_text(svg(label), "utf-8")
    png_path = out_dir / f"{label.device_id}.png"
    png_path.write_bytes(png(label))
    return [svg_path, png_path]


def read_labels(path: Path) -> list[Label]:
    """Labels from a CSV with device_id, school and room columns (a header row naming
    them, e.g. a batch log: its failed rows are left out), or plain device_id,school,room rows."""
    import csv
    from provisioning.nodeconfig import DEVICE_ID
    try:
        rows = list(csv.reader(path.read_text("utf-8-sig").splitlines()))
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror}") from None
    rows = [r for r in rows if r and not r[0].lstrip().startswith("#")]
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if {"device_id", "school", "room"} <= set(head):
        at = {k: head.index(k) for k in ("device_id", "school", "room", "result") if k in head}
        rows = [r for r in rows[1:] if "result" not in at or r[at["result"]] != "failed"]
        picked = [(r[at["device_id"]], r[at["school"]], r[at["room"]]) for r in rows]
    else:
        picked = [tuple(r[:3]) for r in rows if len(r) >= 3]
    labels, seen = [], set()
    for device_id, school, room in ((a.strip(), b.strip(), c.strip()) for a, b, c in picked):
        if not DEVICE_ID.match(device_id):
            raise ProvisionError(f"{path.name}: {device_id!r} is not cf-<12 lowercase hex digits>")
        if device_id not in seen:      # a log has a row per run: one label per node
            seen.add(device_id)
            labels.append(Label(device_id, school, room))
    if not labels:
        raise ProvisionError(f"{path.name} has no device_id,school,room rows")
    return labels
