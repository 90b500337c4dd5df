"""How an exception is shown in one line."""

from residency.errors import first_line


def test_first_line_is_the_first_non_blank_line_stripped():
    assert first_line(ValueError("\n  boom  \nsecond line")) == "boom"
    assert first_line(RuntimeError("one")) == "one"


def test_first_line_of_an_exception_without_a_message():
    assert first_line(ValueError()) == "ValueError"
    assert first_line(KeyboardInterrupt("  \n ")) == "KeyboardInterrupt"
    assert first_line(ValueError(), "") == ""
