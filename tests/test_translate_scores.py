"""Translation scores: exact match, BLEU and chrF, and the warning about one-token output."""

import pytest

from rnnkit.tasks import translate_scores as ts


def test_match_scores_on_answers_known_in_advance():
    four = [["cuatro", "tres", "dos", "uno"], ["nueve", "ocho", "siete", "seis"]]
    perfect = {"exact": 1.0, "bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert ts.match_scores(four, four, "word") == perfect
    other = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    disjoint = ts.match_scores(other, four, "word")
    assert disjoint["exact"] == disjoint["bleu"] == 0.0 and disjoint["chrf"] < 10
    half = ts.match_scores([four[0], four[1][:3] + ["cero"]], four, "word")
    assert half["exact"] == 0.5 and 0 < half["bleu"] < 100 and 0 < half["chrf"] < 100
    letters = [list("dos uno"), list("tres")]
    assert ts.match_scores(letters, letters, "char") == perfect
    # BLEU counts 1- to 4-grams: a corpus with no 4-gram scores 0 however right it is; chrF
    # (character n-grams) does not
    short = [["dos", "uno"]]
    assert ts.match_scores(short, short, "word") == {**perfect, "bleu": 0.0}


def test_one_token_share_finds_an_output_of_commas():
    assert ts.one_token_share([[","] * 15, [",", ",", "jesús"]]) == (17 / 18, ",")
    assert ts.one_token_share([["dos", "uno"], ["tres"]])[0] == pytest.approx(1 / 3)
    assert ts.one_token_share([[], []]) == (0.0, "")


def test_one_token_output_is_warned_about_with_what_to_try():
    commas = [[","] * 15, [",", ",", "jesús"]]
    warning = ts.one_token_warning(commas, "test output")
    assert warning.startswith("warning: 94% of the test output is the token ','")
    assert "--beam" in warning and "--no-repeat-ngram" in warning
    assert ts.one_token_warning([["dos", "uno", "tres"]] * 5) == ""
    assert ts.one_token_warning([["sí"]]) == ""  # one short answer is not a loop
