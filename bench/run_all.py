"""Run the foundation benchmarks in turn: crypto, codec, ledger.

Run from a checkout: ``python -m bench.run_all [--quick] [--json-dir DIR]``. With ``--json-dir``
each benchmark writes ``DIR/<name>.json`` (``bench/results/`` is ignored by git).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from . import codec_bench, crypto_bench, ledger_bench

BENCHMARKS = (
    ("crypto", crypto_bench.main),
    ("codec", codec_bench.main),
    ("ledger", ledger_bench.main),
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    p.add_argument("--json-dir", metavar="DIR", help="write each benchmark's figures there")
    args = p.parse_args(argv)
    failed = []
    for name, bench_main in BENCHMARKS:
        sub = ["--quick"] if args.quick else []
        if args.json_dir:
            sub += ["--json", str(Path(args.json_dir) / f"{name}.json")]
        started = time.perf_counter()
        code = bench_main(sub)
        print(f"[{name}: exit {code}, {time.perf_counter() - started:.1f} s]\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
