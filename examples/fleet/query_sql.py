"""Query a fleet's samples across collectors in PostgreSQL (SQLAlchemy, plain SQL).

Run: ``python examples/fleet/query_sql.py [--prefix fleet] [--variable 1]
[--url postgresql+psycopg://postgres@127.0.0.1/test]``. Every collector of ``run_fleet.py`` writes
into the same tables ``<prefix>_samples``, ``<prefix>_variables``, ``<prefix>_contexts``, each its
own context id; a run's row in ``<prefix>_contexts`` holds the collector's name in its metadata
(``[metadata] collector`` of its configuration). A sample belongs to the run of its context whose
time span holds its read time, so the queries below attribute every row to a collector:

1. per collector and context: runs, samples, samples not GOOD, first and last read time;
2. the latest value of one variable (``--variable``, by id) at each collector.
"""

from __future__ import annotations

import argparse
import re

import sqlalchemy as sa

PER_COLLECTOR = """
SELECT c.metadata->>'collector' AS collector, s.context_id,
       count(DISTINCT c.id) AS runs, count(*) AS samples,
       count(*) FILTER (WHERE s.quality <> 'GOOD') AS not_good,
       min(s.read_at) AS first, max(s.read_at) AS last
FROM {p}samples s
JOIN {p}contexts c ON c.context_id = s.context_id
 AND s.read_at >= c.start_date AND (c.end_date IS NULL OR s.read_at <= c.end_date)
GROUP BY 1, 2
ORDER BY 1, 2
"""

LATEST = """
SELECT DISTINCT ON (c.metadata->>'collector')
       c.metadata->>'collector' AS collector, v.address, s.read_at,
       coalesce(s.value_num::text, s.value_int::text, s.value_text) AS value, s.quality
FROM {p}samples s
JOIN {p}variables v ON v.id = s.variable_key AND v.variable_id = :variable
JOIN {p}contexts c ON c.context_id = s.context_id
 AND s.read_at >= c.start_date AND (c.end_date IS NULL OR s.read_at <= c.end_date)
ORDER BY c.metadata->>'collector', s.read_at DESC
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1/test")
    parser.add_argument("--prefix", default="fleet", help="the fleet's prefix: tables <prefix>_* (fleet)")
    parser.add_argument("--variable", type=int, default=1, help="variable id of the latest-value query (1)")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", args.prefix):
        parser.error(f"--prefix must be lowercase letters, digits and _, got {args.prefix!r}")
    p = f"{args.prefix}_"
    engine = sa.create_engine(args.url)
    with engine.connect() as conn:
        print(
            f"{'collector':<12} {'context':>7} {'runs':>4} {'samples':>9} {'not GOOD':>8}  first .. last read"
        )
        for row in conn.execute(sa.text(PER_COLLECTOR.format(p=p))):
            print(
                f"{row.collector or '?':<12} {row.context_id:>7} {row.runs:>4} {row.samples:>9} "
                f"{row.not_good:>8}  {row.first:%H:%M:%S.%f} .. {row.last:%H:%M:%S.%f}"
            )
        print()
        print(f"latest value of variable {args.variable}:")
        for row in conn.execute(sa.text(LATEST.format(p=p)), {"variable": args.variable}):
            print(f"{row.collector or '?':<12} {row.address:<24} {row.read_at}  {row.value}  {row.quality}")
    engine.dispose()


if __name__ == "__main__":
    main()
