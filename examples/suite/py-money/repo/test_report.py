from money import format_cents
from report import order_line, refund_line, total_line


def test_format_cents():
    assert format_cents(1205) == "$12.05"
    assert format_cents(-5) == "-$0.05"


def test_report_lines_are_unchanged():
    assert order_line("tea", 450) == "tea: $4.50"
    assert refund_line("cup", 1299) == "cup (refund): -$12.99"
    assert total_line([("tea", 450), ("cup", -1299)]) == "TOTAL: -$8.49"
