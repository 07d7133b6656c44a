import csv
import statistics
import sys


def column_stats(path, column):
    values = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            raw = row.get(column, "").strip()
            if not raw:
                continue
            try:
                values.append(float(raw))
            except ValueError:
                print(f"skipping non-numeric value {raw!r}", file=sys.stderr)
    if not values:
        return None
    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


if __name__ == "__main__":
    print(column_stats(sys.argv[1], sys.argv[2]))
