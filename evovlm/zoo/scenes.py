"""Synthetic images for the zoo VLM: coloured shapes on a grid, with questions about colour and count.

A scene places 1-4 shapes (circle, square, triangle) in distinct cells of a 3x3 grid. Questions
ask how many shapes of a kind there are, or the colour of a shape that occurs once. English
answers train the zoo VLM; Japanese questions with Japanese references make zoo-vqa-ja.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from evovlm.zoo.world import COLOURS, SEPARATOR, SHAPES, answer_sentence

IMAGE_SIZE = 48
GRID = 3
MAX_SHAPES = 4  # shapes in a scene: 1 to MAX_SHAPES
BACKGROUND = (200, 200, 200)
_RGB = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 50), "yellow": (235, 210, 20),
        "black": (20, 20, 20)}
# (EN, JA, RGB), names from the shared lexicon; white is left out: it would vanish on the background
SCENE_COLOURS = [(en, ja, _RGB[en]) for en, ja, _ in COLOURS if en in _RGB]


@dataclass(frozen=True)
class Shape:
    kind: int  # index into SHAPES
    colour: int  # index into SCENE_COLOURS
    cell: int  # 0..GRID*GRID-1


@dataclass(frozen=True)
class VisualQuestion:
    """A question about a scene; ``value_en``/``value_ja`` are the bare answers ("red"/"赤", "3")."""

    question: str
    language: str
    kind: str  # "colour" or "count"
    subject_en: str  # the shape asked about ("circle"), the key of the reply's work part
    subject_ja: str
    value_en: str
    value_ja: str
    wrong_ja: tuple[str, ...]  # values that must not appear in a correct reply
    wrong_en: tuple[str, ...]


def random_scene(rng: random.Random) -> tuple[Shape, ...]:
    cells = rng.sample(range(GRID * GRID), rng.randint(1, MAX_SHAPES))
    return tuple(Shape(rng.randrange(len(SHAPES)), rng.randrange(len(SCENE_COLOURS)), cell) for cell in cells)


def scene_ref(scene: tuple[Shape, ...]) -> str:
    """A printable id from which :func:`scene_from_ref` redraws the image (results files hold no pixels)."""
    return "zoo-scene:" + ",".join(f"{SHAPES[s.kind][0]}-{SCENE_COLOURS[s.colour][0]}-{s.cell}" for s in scene)


def scene_from_ref(ref: str) -> tuple[Shape, ...]:
    if not ref.startswith("zoo-scene:"):
        raise ValueError(f"not a zoo scene reference: {ref!r}")
    shape_names = [s[0] for s in SHAPES]
    colour_names = [c[0] for c in SCENE_COLOURS]
    shapes = []
    for part in filter(None, ref.removeprefix("zoo-scene:").split(",")):
        kind, colour, cell = part.split("-")
        shapes.append(Shape(shape_names.index(kind), colour_names.index(colour), int(cell)))
    return tuple(shapes)


def render(scene: tuple[Shape, ...], size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell_size = size / GRID
    for shape in scene:
        row, col = divmod(shape.cell, GRID)
        margin = cell_size * 0.15
        box = (col * cell_size + margin, row * cell_size + margin,
               (col + 1) * cell_size - margin, (row + 1) * cell_size - margin)
        colour = SCENE_COLOURS[shape.colour][2]
        if SHAPES[shape.kind][0] == "circle":
            draw.ellipse(box, fill=colour)
        elif SHAPES[shape.kind][0] == "square":
            draw.rectangle(box, fill=colour)
        else:
            left, top, right, bottom = box
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=colour)
    return image


COUNTS = tuple(str(n) for n in range(MAX_SHAPES + 1))  # a shape kind occurs 0 to MAX_SHAPES times
# Every answer a question can have, colours then counts: the k of "no constant reply beats 1/k".
ANSWERS = tuple(c[0] for c in SCENE_COLOURS) + COUNTS


def visual_question(rng: random.Random, scene: tuple[Shape, ...], language: str) -> VisualQuestion:
    """A colour question about a shape that occurs once, else a count question.

    A reply that names any other answer (another colour, or any count for a colour question) is
    wrong, so a reply that hedges across kinds (``丸=1; 答えは赤です。``) is never right.
    """
    counts = [sum(shape.kind == kind for shape in scene) for kind in range(len(SHAPES))]
    unique = [shape for shape in scene if counts[shape.kind] == 1]
    if unique and rng.random() < 0.5:
        shape = rng.choice(unique)
        en_name, _, ja_name = SHAPES[shape.kind]
        value_en, value_ja, _ = SCENE_COLOURS[shape.colour]
        question = f"What color is the {en_name}?" if language == "en" else f"{ja_name}は何色ですか？"
        others = [c for c in SCENE_COLOURS if c[1] != value_ja]
        return VisualQuestion(question, language, "colour", en_name, ja_name, value_en, value_ja,
                              tuple(c[1] for c in others) + COUNTS, tuple(c[0] for c in others) + COUNTS)
    kind = rng.randrange(len(SHAPES))
    en_name, en_plural, ja_name = SHAPES[kind]
    count = str(counts[kind])
    question = f"How many {en_plural} are there?" if language == "en" else f"{ja_name}はいくつありますか？"
    wrong = tuple(n for n in COUNTS if n != count)
    return VisualQuestion(question, language, "count", en_name, ja_name, count, count,
                          wrong + tuple(c[1] for c in SCENE_COLOURS), wrong + tuple(c[0] for c in SCENE_COLOURS))


def question_with_answer(rng: random.Random, language: str, answer: str) -> tuple[tuple[Shape, ...], VisualQuestion]:
    """A scene and question whose answer is ``answer`` (an English colour or a count, one of
    :data:`ANSWERS`): draws from the training distribution until one has it, so the scenes are
    that distribution conditioned on the answer."""
    if answer not in ANSWERS:
        raise ValueError(f"no question answers {answer!r}; answers are {', '.join(ANSWERS)}")
    while True:
        scene = random_scene(rng)
        question = visual_question(rng, scene, language)
        if question.value_en == answer:
            return scene, question


def vqa_work(question: VisualQuestion, language: str) -> str:
    """The work part of a reply, ``circle=red``: the shape asked about and what was seen."""
    if language == "en":
        return f"{question.subject_en}={question.value_en}"
    return f"{question.subject_ja}={question.value_ja}"


def vqa_reply(question: VisualQuestion, language: str) -> str:
    """``circle=red; The answer is red.`` / ``丸=赤; 答えは赤です。`` (the zoo's WORK; SENTENCE shape)."""
    value = question.value_en if language == "en" else question.value_ja
    return f"{vqa_work(question, language)}{SEPARATOR}{answer_sentence(value, language)}"


def scene_characters() -> str:
    texts = [c[0] + c[1] for c in SCENE_COLOURS] + [s[0] + s[1] + s[2] for s in SHAPES]
    texts += ["What color is the ?", "How many are there?", "は何色ですか？", "はいくつありますか？", "答えはです。",
              "The answer is .=;"]
    return "".join(sorted(set("".join(texts))))
