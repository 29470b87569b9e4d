import pytest

from dubflow.languages import iso639_2, language_name


@pytest.mark.parametrize("code, tag", [("en", "eng"), ("pt", "por"), ("de", "ger"),
                                       ("fr", "fre"), ("zh", "chi"), ("yue", "yue"),
                                       ("xx", "und"), ("", "und")])
def test_matroska_tags(code, tag):
    assert iso639_2(code) == tag


def test_names_for_titles():
    assert language_name("pt") == "Portuguese"
    assert language_name("xx") == "xx"
