"""The one exception type for bad user input (CSV files, images, configs)."""


class DataError(ValueError):
    """Bad input data; the message names the file, the 1-based line where known, and what was expected."""


def csv_lines(row_positions, limit: int = 5) -> str:
    """Format 0-based data-row positions as 1-based CSV line numbers (the header is line 1)."""
    lines = [int(p) + 2 for p in row_positions]
    shown = ", ".join(str(n) for n in lines[:limit])
    more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"
