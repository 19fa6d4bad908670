"""argparse types shared by the command lines: a refused value is argparse's one ``error:`` line
naming the option, exit code 2, before any work."""

import argparse
import math


def number(low: float, high: float | None = None, low_inclusive: bool = False):
    """An argparse type: a finite float above ``low`` (or at it, ``low_inclusive``) and below ``high``;
    argparse turns a refusal into its one ``error:`` line and exit code 2."""
    wanted = f"a finite number {'>=' if low_inclusive else '>'} {low:g}" + (
        f" and < {high:g}" if high is not None else ""
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected {wanted}") from None
        too_low = value < low or (value == low and not low_inclusive)
        if not math.isfinite(value) or too_low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected {wanted}")
        return value

    return parse


def whole_number(at_least: int):
    """An argparse type: a whole number >= ``at_least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < at_least:
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected a whole number >= {at_least}")
        return value

    return parse
