"""Which rows ``first`` / ``last`` / ``after`` / ``before`` select: a pure decision."""

from __future__ import annotations

import pytest

from crmhooks.errors import ParameterInvalid
from crmhooks.query.params import Window, page_window


@pytest.mark.parametrize(
    ("given", "window"),
    [
        ((None, None, None, None), Window(30, False, None, True, None)),
        ((10, None, "A", None), Window(10, False, "A", True, None)),
        ((None, 5, None, None), Window(5, True, None, True, None)),
        ((None, 5, "A", None), Window(5, True, "A", True, None)),
        ((None, 5, None, "B"), Window(5, True, "B", False, None)),
        ((7, None, None, "B"), Window(7, True, "B", False, None)),
        ((None, None, None, "B"), Window(30, True, "B", False, None)),
        ((10, 3, None, None), Window(10, False, None, True, 3)),
        ((10, 3, "A", None), Window(10, False, "A", True, 3)),
        ((3, 10, None, None), Window(3, False, None, True, None)),
    ],
)
def test_page_window(
    given: tuple[int | None, int | None, str | None, str | None], window: Window
) -> None:
    assert page_window(*given) == window


@pytest.mark.parametrize("given", [(None, None, "A", "B"), (5, None, "A", "B"), (10, 3, None, "B")])
def test_page_window_refuses_what_names_no_single_window(
    given: tuple[int | None, int | None, str | None, str | None],
) -> None:
    with pytest.raises(ParameterInvalid):
        page_window(*given)
