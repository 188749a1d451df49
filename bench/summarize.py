"""Reads the result lines written by lib.sh's run_wrk ("TAG k=v ...") and gives medians."""
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            tag, *kvs = line.split()
            runs[tag].append({k: float(v) for k, v in (kv.split("=", 1) for kv in kvs)})
    return runs


class Results:
    def __init__(self, path):
        self.runs = load(path)

    def med(self, tag, field):
        return statistics.median(r[field] for r in self.runs[tag])

    def total(self, tag, field):
        return int(sum(r[field] for r in self.runs[tag]))

    def peak(self, tag, field):
        return max(r[field] for r in self.runs[tag])

    def n(self, tag):
        return len(self.runs[tag])

    def spread(self, tag, field):
        v = [r[field] for r in self.runs[tag]]
        return min(v), max(v)


def fmt_rps(v):
    return f"{v / 1000:.1f}k"


if __name__ == "__main__":
    r = Results(sys.argv[1])
    for tag, rs in r.runs.items():
        print(tag, len(rs), {k: r.med(tag, k) for k in rs[0]})
