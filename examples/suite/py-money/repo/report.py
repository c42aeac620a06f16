"""Lines of an order report."""


def order_line(name, cents):
    return f"{name}: ${cents // 100}.{cents % 100:02d}"


def refund_line(name, cents):
    return f"{name} (refund): -${cents // 100}.{cents % 100:02d}"


def total_line(items):
    cents = sum(amount for _, amount in items)
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"TOTAL: {sign}${cents // 100}.{cents % 100:02d}"
