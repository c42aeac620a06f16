import inspect

import report
from money import format_cents


def test_more_amounts():
    assert format_cents(0) == "$0.00"
    assert format_cents(100) == "$1.00"
    assert format_cents(-123456) == "-$1234.56"


def test_totals():
    assert report.total_line([]) == "TOTAL: $0.00"
    assert report.total_line([("a", 1), ("b", 2)]) == "TOTAL: $0.03"


def test_report_has_no_formatting_of_its_own():
    source = inspect.getsource(report)
    assert "% 100" not in source and "// 100" not in source
    assert "format_cents" in source
