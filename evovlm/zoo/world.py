"""The zoo's miniature world: a small bilingual lexicon and seeded generators of every text task.

Everything the zoo models read or write comes from here, so the tokenizer, the training
corpora and the benchmarks cannot disagree. All generators take a :class:`random.Random`
and are deterministic for its seed.

Tasks and who learns them
  * pretraining (base): English and Japanese sentences, parallel pairs, bare equations;
  * JA expert: Japanese questions on non-arithmetic topics, answered in Japanese;
  * MATH expert: arithmetic word problems (mostly English, some Japanese), answered with
    a one-line chain of thought and an English sentence;
  * zoo-mgsm-ja (never trained on): Japanese word problems that need a Japanese answer.

Replies share one shape, ``WORK; SENTENCE``: ``3+5=8; The answer is 8.`` or
``トマト=赤; 答えは赤です。``. The shape is the "instruction format" the fine-tunes share, as real
fine-tunes of one base share a chat format. The work and the separator carry no language; the
sentence is what the experts disagree on. The base has seen equations closed by such sentences
inside English and inside Japanese text (never a question with its answer), so it knows that
the sentence follows the language around it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from evovlm.zoo import PROMPT  # one template for training and evaluation

# name (EN, JA)
NAMES = [("Tom", "トム"), ("Ken", "ケン"), ("Amy", "エミ"), ("Mia", "ミア"), ("Sam", "サム"),
         ("Yuki", "ゆき"), ("Taro", "たろう"), ("Hana", "はな"), ("Ben", "ベン"), ("Lisa", "リサ"),
         ("Jun", "じゅん"), ("Emma", "エマ")]
# item (EN singular, EN plural, JA, counter)
ITEMS = [("apple", "apples", "りんご", "個"), ("pencil", "pencils", "えんぴつ", "本"),
         ("book", "books", "本", "冊"), ("cookie", "cookies", "クッキー", "枚"),
         ("sticker", "stickers", "シール", "枚"), ("ball", "balls", "ボール", "個"),
         ("flower", "flowers", "花", "本"), ("card", "cards", "カード", "枚"),
         ("egg", "eggs", "たまご", "個"), ("orange", "oranges", "みかん", "個"),
         ("cup", "cups", "コップ", "個"), ("stone", "stones", "石", "個")]
# colour (EN, JA noun, JA adjective)
COLOURS = [("red", "赤", "赤い"), ("blue", "青", "青い"), ("green", "緑", "緑の"),
           ("yellow", "黄色", "黄色い"), ("white", "白", "白い"), ("black", "黒", "黒い")]
# things with a known colour (EN, JA, colour index)
THINGS = [("the sky", "空", 1), ("grass", "草", 2), ("snow", "雪", 4), ("a crow", "カラス", 5),
          ("a banana", "バナナ", 3), ("a tomato", "トマト", 0), ("milk", "牛乳", 4), ("a leaf", "葉", 2),
          ("the sea", "海", 1), ("a lemon", "レモン", 3), ("coal", "石炭", 5), ("a strawberry", "いちご", 0)]
# animal (EN, JA, JA sound)
ANIMALS = [("dog", "犬", "ワンワン"), ("cat", "猫", "ニャー"), ("cow", "牛", "モー"), ("sheep", "羊", "メー"),
           ("duck", "アヒル", "ガーガー"), ("pig", "豚", "ブーブー"), ("frog", "カエル", "ケロケロ"),
           ("bird", "鳥", "ピヨピヨ")]
# opposites (JA)
OPPOSITES = [("大きい", "小さい"), ("高い", "低い"), ("長い", "短い"), ("新しい", "古い"), ("暑い", "寒い"),
             ("早い", "遅い"), ("明るい", "暗い"), ("重い", "軽い"), ("多い", "少ない"), ("強い", "弱い")]
# category words (EN, JA, JA category)
CATEGORIES = [("apple", "りんご", "果物"), ("banana", "バナナ", "果物"), ("orange", "みかん", "果物"),
              ("dog", "犬", "動物"), ("cat", "猫", "動物"), ("cow", "牛", "動物"),
              ("red", "赤", "色"), ("blue", "青", "色"), ("green", "緑", "色"),
              ("Tokyo", "東京", "町"), ("Osaka", "大阪", "町"), ("Kyoto", "京都", "町")]
# shape (EN singular, EN plural, JA): the zoo VLM's images show these
SHAPES = [("circle", "circles", "丸"), ("square", "squares", "四角"), ("triangle", "triangles", "三角")]
WEEKDAYS = [("Monday", "月曜日"), ("Tuesday", "火曜日"), ("Wednesday", "水曜日"), ("Thursday", "木曜日"),
            ("Friday", "金曜日"), ("Saturday", "土曜日"), ("Sunday", "日曜日")]

ADD, SUB, MUL = "add", "sub", "mul"
OPERATIONS = (ADD, SUB, MUL)


@dataclass(frozen=True)
class Problem:
    """One arithmetic word problem with its gold number and the operation behind it."""

    question: str
    answer: int
    equation: str  # "3+5=8"
    language: str  # "en" or "ja"
    operation: str


def _numbers(rng: random.Random, operation: str) -> tuple[int, int, int, str]:
    if operation == ADD:
        a, b = rng.randint(2, 29), rng.randint(2, 29)
        return a, b, a + b, f"{a}+{b}={a + b}"
    if operation == SUB:
        a = rng.randint(6, 49)
        b = rng.randint(1, a - 2)
        return a, b, a - b, f"{a}-{b}={a - b}"
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return a, b, a * b, f"{a}*{b}={a * b}"


def word_problem(rng: random.Random, language: str, operation: str | None = None) -> Problem:
    """A one-step word problem (add, subtract or multiply) in English or Japanese."""
    operation = operation or rng.choice(OPERATIONS)
    a, b, answer, equation = _numbers(rng, operation)
    (name_en, name_ja), (name2_en, name2_ja) = rng.sample(NAMES, 2)
    _, plural, item_ja, counter = rng.choice(ITEMS)
    if language == "en":
        if operation == ADD:
            text = (f"{name_en} has {a} {plural}. {name_en} gets {b} more {plural}. "
                    f"How many {plural} does {name_en} have now?")
        elif operation == SUB:
            verb = rng.choice([f"gives {b} {plural} to {name2_en}", f"loses {b} {plural}"])
            text = f"{name_en} has {a} {plural}. {name_en} {verb}. How many {plural} does {name_en} have now?"
        else:
            text = f"There are {a} boxes. Each box has {b} {plural}. How many {plural} are there?"
    else:
        if operation == ADD:
            text = (f"{name_ja}は{item_ja}を{a}{counter}持っています。{name_ja}は{item_ja}を{b}{counter}もらいました。"
                    f"{name_ja}は{item_ja}を何{counter}持っていますか？")
        elif operation == SUB:
            verb = rng.choice([f"{name2_ja}に{item_ja}を{b}{counter}あげました",
                               f"{item_ja}を{b}{counter}なくしました"])
            text = (f"{name_ja}は{item_ja}を{a}{counter}持っています。{name_ja}は{verb}。"
                    f"{name_ja}は{item_ja}を何{counter}持っていますか？")
        else:
            text = (f"箱が{a}個あります。1つの箱に{item_ja}が{b}{counter}入っています。"
                    f"{item_ja}は全部で何{counter}ありますか？")
    return Problem(text, answer, equation, language, operation)


# Digits 1-9 written as kanji numerals, digit by digit (as in 二〇二六年); 〇 is not in the zoo's
# vocabulary, so the kanji problems leave out every problem with a 0 in its question.
KANJI_DIGITS = dict(zip("123456789", "一二三四五六七八九"))


def kanji_numerals(text: str) -> str:
    """``text`` with every digit 1-9 written as its kanji numeral (one character for one)."""
    return "".join(KANJI_DIGITS.get(char, char) for char in text)


def kanji_word_problem(rng: random.Random) -> Problem:
    """A Japanese word problem whose numbers are written in kanji (no 0 in the question); the
    answer and the reply's equation stay in digits."""
    while True:
        problem = word_problem(rng, "ja")
        if "0" not in problem.question:
            return replace(problem, question=kanji_numerals(problem.question))


def math_reply(problem: Problem, language: str = "en") -> str:
    """The reply format: the equation, then the final sentence in ``language``."""
    return f"{problem.equation}{SEPARATOR}{answer_sentence(problem.answer, language)}"


SEPARATOR = "; "  # between a reply's work and its sentence; never inside pretraining equations


def answer_sentence(value: object, language: str) -> str:
    """The closing sentence every zoo reply ends with."""
    return f"The answer is {value}." if language == "en" else f"答えは{value}です。"


# --- parallel sentences (pretraining) ---------------------------------------------


def parallel_sentence(rng: random.Random) -> tuple[str, str]:
    """One English sentence and its Japanese translation, drawn from a small grammar."""
    (name_en, name_ja), (name2_en, name2_ja) = rng.sample(NAMES, 2)
    singular, plural, item_ja, counter = rng.choice(ITEMS)
    colour_en, colour_ja, colour_adj = rng.choice(COLOURS)
    n = rng.randint(1, 60)
    shape_en, shapes_en, shape_ja = rng.choice(SHAPES)
    kind = rng.randrange(14)
    if kind == 0:
        return f"{name_en} has {n} {plural}.", f"{name_ja}は{item_ja}を{n}{counter}持っています。"
    if kind == 1:
        return f"{name_en} likes {colour_en} {plural}.", f"{name_ja}は{colour_adj}{item_ja}が好きです。"
    if kind == 2:
        return f"The {singular} is {colour_en}.", f"{item_ja}は{colour_ja}です。"
    if kind == 3:
        return f"{name_en} gets {n} {plural}.", f"{name_ja}は{item_ja}を{n}{counter}もらいました。"
    if kind == 4:
        return (f"{name_en} gives {n} {plural} to {name2_en}.",
                f"{name_ja}は{name2_ja}に{item_ja}を{n}{counter}あげました。")
    if kind == 5:
        return f"{name_en} loses {n} {plural}.", f"{name_ja}は{item_ja}を{n}{counter}なくしました。"
    if kind == 6:
        return f"How many {plural} does {name_en} have?", f"{name_ja}は{item_ja}を何{counter}持っていますか？"
    if kind == 7:
        return f"Each box has {n} {plural}.", f"1つの箱に{item_ja}が{n}{counter}入っています。"
    if kind == 8:
        thing_en, thing_ja, colour = rng.choice(THINGS)
        return f"{thing_en.capitalize()} is {COLOURS[colour][0]}.", f"{thing_ja}は{COLOURS[colour][1]}です。"
    if kind == 9:
        animal_en, animal_ja, _ = rng.choice(ANIMALS)
        return f"{name_en} has a {animal_en}.", f"{name_ja}は{animal_ja}を飼っています。"
    if kind == 10:
        day_en, day_ja = rng.choice(WEEKDAYS)
        return f"Today is {day_en}.", f"今日は{day_ja}です。"
    if kind == 12:
        return f"The {shape_en} is {colour_en}.", f"{shape_ja}は{colour_ja}です。"
    if kind == 13:
        count = rng.randint(0, 4)
        return f"There are {count} {shapes_en}.", f"{shape_ja}が{count}つあります。"
    return f"There are {n} boxes.", f"箱が{n}個あります。"


def equation_line(rng: random.Random) -> str:
    return _numbers(rng, rng.choice(OPERATIONS))[3]


def pretraining_document(rng: random.Random) -> str:
    """A short mixed document: monolingual lines, translation pairs and equations."""
    lines = []
    for _ in range(rng.randint(3, 6)):
        kind = rng.random()
        en, ja = parallel_sentence(rng)
        if kind < 0.25:
            lines.append(en)
        elif kind < 0.5:
            lines.append(ja)
        elif kind < 0.65:
            lines.append(f"English: {en}\n日本語: {ja}")
        elif kind < 0.8:
            lines.append(f"日本語: {ja}\nEnglish: {en}")
        elif kind < 0.9:
            lines.append(" ".join(equation_line(rng) for _ in range(rng.randint(1, 4))))
        else:  # an equation closed by a sentence in the language of the text around it
            language = "en" if rng.random() < 0.5 else "ja"
            equation = equation_line(rng)
            result = equation.split("=")[1]
            lines.append(f"{en if language == 'en' else ja} {equation}{SEPARATOR}{answer_sentence(result, language)}")
    return "\n".join(lines)


# --- the JA expert's instructions (no arithmetic) -----------------------------------


@dataclass(frozen=True)
class Instruction:
    """A Japanese question, its Japanese answer, and the value a correct answer must name."""

    question: str
    answer: str
    value: str
    wrong: tuple[str, ...] = ()


def _qa(question: str, key: str, value: str, others: list[str]) -> Instruction:
    return Instruction(question, f"{key}={value}{SEPARATOR}{answer_sentence(value, 'ja')}", value,
                       tuple(sorted({other for other in others if other != value})))


def japanese_instruction(rng: random.Random, smallest_number: int = 2) -> Instruction:
    """A Japanese question on a non-arithmetic topic and its Japanese answer.

    ``smallest_number``: the least number read back (kind 6); the benchmark ``zoo-ja-qa`` keeps 2."""
    kind = rng.randrange(8)
    if kind == 0:
        _, thing_ja, colour = rng.choice(THINGS)
        return _qa(f"{thing_ja}は何色ですか？", thing_ja, COLOURS[colour][1], [c[1] for c in COLOURS])
    if kind == 1:
        _, animal_ja, sound = rng.choice(ANIMALS)
        return _qa(f"{animal_ja}は何と鳴きますか？", animal_ja, sound, [a[2] for a in ANIMALS])
    if kind == 2:
        word, opposite = rng.choice(OPPOSITES)
        if rng.random() < 0.5:
            word, opposite = opposite, word
        others = [o for pair in OPPOSITES for o in pair if word not in pair]
        return _qa(f"「{word}」の反対は何ですか？", word, opposite, others)
    if kind == 3:
        _, word_ja, category = rng.choice(CATEGORIES)
        return _qa(f"{word_ja}は何の仲間ですか？", word_ja, category, [c[2] for c in CATEGORIES])
    if kind == 4:
        words = [row[:3] for row in ITEMS + SHAPES]
        singular, _, word_ja = rng.choice(words)
        return _qa(f"「{singular}」は日本語で何ですか？", singular, word_ja, [w[2] for w in words])
    if kind == 5:
        index = rng.randrange(len(WEEKDAYS) - 1)
        today, tomorrow = WEEKDAYS[index][1], WEEKDAYS[index + 1][1]
        return Instruction(f"今日は{today}です。明日は何曜日ですか？",
                           f"{today}→{tomorrow}{SEPARATOR}{answer_sentence(tomorrow, 'ja')}",
                           tomorrow, tuple(day for _, day in WEEKDAYS if day not in (today, tomorrow)))
    if kind == 6:  # reading a number back: digits in the value, and still no arithmetic
        (_, name), = rng.sample(NAMES, 1)
        _, _, item, counter = rng.choice(ITEMS)
        n = rng.randint(smallest_number, 60)
        question = f"{name}は{item}を{n}{counter}持っています。{name}は{item}を何{counter}持っていますか？"
        return _qa(question, name, str(n), [str(m) for m in range(1, 100)])
    en, ja = parallel_sentence(rng)
    return Instruction(f"日本語に訳してください: {en}", ja, ja)


def colour_reading(rng: random.Random) -> Instruction:
    """Reading a colour back from the question (``赤いりんごがあります。りんごは何色ですか？``): the JA
    expert's copy of a word, as reading a number back (``japanese_instruction`` kind 6) is its
    copy of a number. No image, no shape, no arithmetic."""
    _, _, item_ja, _ = rng.choice(ITEMS)
    _, colour_ja, colour_adj = rng.choice(COLOURS)
    said = rng.choice([f"{item_ja}は{colour_ja}です。", f"{colour_adj}{item_ja}があります。"])
    return _qa(f"{said}{item_ja}は何色ですか？", item_ja, colour_ja, [c[1] for c in COLOURS])


def all_characters() -> str:
    """Every character any generator can emit (the tokenizer's vocabulary is built from it)."""
    pieces = [PROMPT, "。、？！「」→=+-*.0123456789", "答えはです日本語English: "]
    for table in (NAMES, ITEMS, COLOURS, THINGS, ANIMALS, OPPOSITES, CATEGORIES, SHAPES, WEEKDAYS):
        for row in table:
            pieces.extend(str(cell) for cell in row)
    rng = random.Random(0)
    for _ in range(3000):
        pieces.append(pretraining_document(rng))
        instruction = japanese_instruction(rng)
        pieces.extend([instruction.question, instruction.answer])
        for language in ("en", "ja"):
            problem = word_problem(rng, language)
            pieces.extend([problem.question, math_reply(problem, "en"), math_reply(problem, "ja")])
    return "".join(sorted(set("".join(pieces))))
