"""`make bench`: every benchmark, one after another, then one table of their SUMMARY lines.

    .venv/bin/python bench/summary.py

Each benchmark prints its own figures and ends with lines `SUMMARY name | figure | baseline | ratio | target | met`
(through `summary()`), the baseline measured in the same run.
"""

import subprocess
import sys
from pathlib import Path

# Each with its arguments: the web tier as installed (two web processes), and as one process for scale.
BENCHMARKS = ["overhead.py", "multiturn.py", "api_load.py", "api_load.py --web-processes 1", "streams.py",
              "big_files.py", "batching.py", "decode_steps.py", "browser_stream.py", "worker_stop.py"]


def summary(name: str, figure: float, baseline: float, target: str, measured: float | None = None) -> None:
    """Print one row of the table: whether `measured` (the ratio figure / baseline unless given) meets `target`,
    written as "<= 0.3" or ">= 1.0" with an optional unit after the number, or "-" for a figure shown for scale."""
    ratio = figure / baseline if baseline else float("nan")
    if target == "-":
        met = "-"
    else:
        operator, bound = target.split()[:2]
        value = ratio if measured is None else measured
        met = "yes" if (value <= float(bound) if operator == "<=" else value >= float(bound)) else "no"
    print(f"SUMMARY {name} | {figure:.4g} | {baseline:.4g} | {ratio:.2f} | {target} | {met}", flush=True)


def main() -> None:
    rows = []
    for name in BENCHMARKS:
        print(f"\n=== bench/{name}", flush=True)
        script, *arguments = name.split()
        process = subprocess.Popen([sys.executable, str(Path(__file__).parent / script), *arguments],
                                   stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("SUMMARY "):
                rows.append(f"| {name} | {line.removeprefix('SUMMARY ').strip()} |")
        if process.wait():
            rows.append(f"| {name} | failed with exit code {process.returncode} | | | | | |")
    print("\n| bench | figure | value | same-run baseline | ratio | target | met |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
