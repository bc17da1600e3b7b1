from knowpack.text import extract_answer, match_lenient, match_strict, normalize, normalized_aliases


def test_normalize_folds_accents_case_articles_and_punctuation():
    assert normalize("The Hague!") == "hague"
    assert normalize("São Tomé") == "sao tome"
    assert normalize("  An  Apple, a day ") == "apple day"
    assert normalize("Guinea-Bissau") == "guinea bissau"


def test_empty_aliases_never_match():
    assert normalized_aliases(["", "  ", "The", "!"]) == []
    assert not match_lenient("anything at all", ["", "the"])
    assert not match_strict("", [""])


def test_lenient_is_containment_on_word_boundaries():
    assert match_lenient("It is Paris, France.", ["paris"])
    assert match_lenient("Answer: Nuku'alofa", ["Nuku alofa"])
    assert not match_lenient("Europe", ["Ur"])
    assert match_lenient("The city of Ur", ["Ur"])


def test_strict_is_exact_normalised_equality():
    assert match_strict("Paris.", ["paris", "Paree"])
    assert not match_strict("Paris, France", ["paris"])


def test_extract_answer_takes_first_nonempty_line_without_prefix():
    assert extract_answer("\n Answer: Madrid\nQuestion: next") == "Madrid"
    assert extract_answer("A: 1912") == "1912"
    assert extract_answer("Lisbon") == "Lisbon"
    assert extract_answer("   \n  ") == ""
