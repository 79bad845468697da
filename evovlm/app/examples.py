"""Example inputs, and the grading of answers to them.

With a models YAML that names an ``examples`` benchmark (the zoo's by default), each tab's examples
are the first questions of that benchmark split, with their references: an answer to one of them
is graded under its column (Japanese or not, the extracted answer, right or wrong, ROUGE-L-ja).
Without it, a few images drawn at start-up and original MGSM-style word problems (MGSM itself is
CC BY 4.0 and is not copied into the repository), ungraded.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("evovlm.app")
RIGHT, WRONG = "✔", "✘"  # dingbats, in the CJK fonts a Space has (colour emoji are not)

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


@dataclass(frozen=True)
class Example:
    """One example question with what grades an answer to it."""

    question: str
    reference: str
    kind: str                    # the benchmark's kind: "math", "vqa" or "qa"
    content: dict | None = None  # {"accepted": [...], "wrong": [...]}: the value a right answer names
    image: str | None = None     # the example image's file


def _image_digest(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class ExampleSet:
    """A tab's examples, found again from what the visitor sends (the question, and the image's bytes)."""

    def __init__(self, examples: list[Example], label: str) -> None:
        self.examples = examples
        self.label = label
        self._index = {(e.question.strip(), _image_digest(e.image)): e for e in examples}

    def rows(self) -> list[list[str]]:
        return [[e.image, e.question] if e.image else [e.question] for e in self.examples]

    def find(self, question: str, image_path: str | None = None) -> Example | None:
        """The example asked, when the question (and image) are exactly one of them: then a reference applies."""
        return self._index.get(((question or "").strip(), _image_digest(image_path)))


def benchmark_examples(source: Any, task: str) -> ExampleSet | None:
    """The first ``source.count`` questions of a registered benchmark, images saved as PNG; None if unknown."""
    from evovlm.errors import EvoVLMError
    from evovlm.eval.benchmarks import load_benchmark

    try:
        bench = load_benchmark(source.benchmark, split=source.split, limit=source.count)
    except EvoVLMError as exc:
        LOG.warning("examples: %s; using the built-in ones", exc)
        return None
    folder = example_dir() / bench.name
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for index, sample in enumerate(bench.samples):
        image = None
        if task == "vqa" and sample.image is not None:
            from PIL import Image

            picture = (sample.image if hasattr(sample.image, "save") else Image.open(sample.image)).convert("RGB")
            # named by content: a benchmark that changes its draw (a new version) never meets a stale file
            digest = hashlib.sha1(picture.tobytes() + repr(picture.size).encode()).hexdigest()[:12]
            image = str(folder / f"{index:03d}-{digest}.png")
            if not Path(image).is_file():
                tmp = Path(image).with_suffix(".tmp.png")
                picture.save(tmp)
                tmp.replace(image)  # atomic: two app processes may start at once
        examples.append(Example(sample.question, sample.reference, bench.kind, sample.content, image))
    where = f"{bench.name}, split {bench.split}" if bench.split else bench.name
    return ExampleSet(examples, f"例 / examples: the first {len(examples)} questions of {where}, graded")


def builtin_examples(task: str) -> ExampleSet:
    if task == "vqa":
        return ExampleSet([Example(question, "", "vqa", image=path) for path, question in image_examples()],
                          "例 / examples")
    return ExampleSet([Example(question, "", "math") for question in MGSM_STYLE], "MGSM 形式の例 / MGSM-style examples")


def grade(example: Example | None, response: str) -> str:
    """A short markdown verdict on ``response`` to ``example`` ("" without a reference)."""
    if example is None or not example.reference or not response or response.startswith(("…", "⚠")):
        return ""
    from evovlm.eval.metrics import content_correct, mgsm_sample, rouge_ja_sample

    if example.kind == "math":
        scored = mgsm_sample(example.reference, response)
        extracted = "none" if scored["extracted"] is None else f"{scored['extracted']:g}"
        verdict = f"{RIGHT} 正解 right" if scored["correct"] else f"{WRONG} 不正解 wrong"
        japanese = f"日本語 Japanese {RIGHT}" if scored["is_ja"] else f"日本語でない not Japanese {WRONG}"
        counted = f"counts for acc_ja {RIGHT}" if scored["correct_ja"] else "does not count for acc_ja"
        return f"{verdict} (answer {extracted}, reference {example.reference}) · {japanese} · {counted}"
    scored = rouge_ja_sample(example.reference, response)
    japanese = f"日本語 Japanese {RIGHT}" if scored["pred_is_ja"] else f"日本語でない not Japanese {WRONG}"
    parts = []
    if example.content:
        right = content_correct(response, example.content["accepted"], example.content.get("wrong", ()))
        accepted = " / ".join(example.content["accepted"])
        parts.append(f"{f'{RIGHT} 正解 right' if right else f'{WRONG} 不正解 wrong'} (expected {accepted})")
    parts += [japanese, f"ROUGE-L-ja {scored['rougeL_ja']:.1f}"]
    return " · ".join(parts)
