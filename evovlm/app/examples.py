"""Example inputs: a few images drawn at start-up (no binary files in the repo) and questions.

The maths problems are original MGSM-style word problems written for this demo (MGSM itself is
CC BY 4.0 and is not copied into the repository).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

DEFAULT_QUESTION = "この画像について説明してください。"

MGSM_STYLE = [
    "りんごが3個あります。お母さんがさらに5個買ってきました。りんごは全部で何個ありますか？",
    "太郎さんは1冊120円のノートを4冊買い、1000円札で払いました。おつりはいくらですか？",
    "教室に生徒が28人います。4人ずつのグループを作ると、グループはいくつできますか？",
    "花子さんは毎日15ページずつ本を読みます。210ページの本を読み終えるには何日かかりますか？",
    "バスに乗客が12人乗っていました。次の停留所で5人降りて、8人乗りました。今、乗客は何人ですか？",
]


def _draw(name: str, size: tuple[int, int] = (320, 240)):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    if name == "apple":
        draw.ellipse((w * 0.3, h * 0.25, w * 0.7, h * 0.85), fill=(200, 20, 30))
        draw.rectangle((w * 0.49, h * 0.12, w * 0.52, h * 0.3), fill=(90, 60, 20))
        draw.ellipse((w * 0.52, h * 0.12, w * 0.64, h * 0.22), fill=(40, 150, 40))
    elif name == "traffic-light":
        image.paste((135, 190, 235), (0, 0, w, h))
        draw.rectangle((w * 0.2, h * 0.35, w * 0.8, h * 0.65), fill=(40, 40, 40))
        for i, colour in enumerate([(60, 60, 60), (60, 60, 60), (230, 30, 30)]):
            cx = w * (0.3 + 0.2 * i)
            draw.ellipse((cx - 22, h * 0.5 - 22, cx + 22, h * 0.5 + 22), fill=colour)
    elif name == "mountain":
        image.paste((150, 200, 250), (0, 0, w, h))
        draw.polygon([(w * 0.1, h), (w * 0.5, h * 0.2), (w * 0.9, h)], fill=(70, 90, 150))
        draw.polygon([(w * 0.4, h * 0.38), (w * 0.5, h * 0.2), (w * 0.6, h * 0.38)], fill="white")
        draw.ellipse((w * 0.78, h * 0.08, w * 0.92, h * 0.26), fill=(250, 120, 40))
    return image


IMAGE_EXAMPLES = [
    ("apple", "この果物は何ですか？何色ですか？"),
    ("traffic-light", "信号は何色ですか？渡ってもいいですか？"),
    ("mountain", "この画像には何が写っていますか？"),
]


def example_dir() -> Path:
    return Path(tempfile.gettempdir()) / "evovlm-app-examples"


def image_examples() -> list[list[str]]:
    """[[image path, question], ...], drawing the images once."""
    folder = example_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, question in IMAGE_EXAMPLES:
        path = folder / f"{name}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            _draw(name).save(tmp)
            tmp.replace(path)  # atomic: two app processes may start at once
        rows.append([str(path), question])
    return rows
