"""Mutation testing of the code whose bugs no test may miss (issue 19). Slow: not in CI.

For each target below, mutmut (``pip install -e '.[dev,mutation]'``) changes the
target's functions one small edit at a time (``<`` to ``<=``, ``+`` to ``-``, a
constant, a dropped argument...) and runs the target's own test files against
each mutant. A mutant the tests still pass on is a *survivor*: a bug they would
not catch. This prints every survivor with its diff, then a table per target
(and writes it as JSON).

Each target runs in its own scratch copy of the repository under
``.mutation/<target>/`` (git-ignored; mutmut keeps its results there, so a
second run resumes; ``--fresh`` starts over). Only in-process tests are listed:
a test that starts ``oms serve`` as a subprocess runs the unmutated package
and would prove nothing. mutmut does not mutate decorated functions, so
``CheckoutServicer.PlaceOrder`` itself (``@rpc @admitted``) is out of reach;
the work it delegates (``_try_place``, ``_replay``, ``_resource``) is in.

Usage (nice: the machine's two cores are shared)::

    nice -n 10 .venv/bin/python scripts/mutation.py                  # every target
    nice -n 10 .venv/bin/python scripts/mutation.py costs batch      # some
    .venv/bin/python scripts/mutation.py --list                      # what each covers
    .venv/bin/python scripts/mutation.py --source /tmp/main-tree     # another tree (before/after)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """What to mutate (a source file, and mutmut name globs of its functions) and what tests it."""

    file: str
    functions: tuple[str, ...]
    tests: tuple[str, ...]
    #: pytest ``-k`` expression to leave out slow tests that add nothing here.
    deselect: str = ""
    #: With ``--quick``: only these of ``tests`` (the direct, fast ones). Survivors then
    #: are an upper bound: a mutant only a left-out test kills counts as surviving.
    quick: tuple[str, ...] = ()


_QUICK_SOLVER_TESTS = (
    "tests/test_reference_cost.py",
    "tests/test_costs_property.py",
    "tests/test_solver_cases.py",
    "tests/test_fulfil_cases.py",
)
_SOLVER_TESTS = (
    "tests/test_reference_cost.py",
    "tests/test_costs_property.py",
    "tests/test_solver_cases.py",
    "tests/test_solver_bruteforce.py",
    "tests/test_fulfil_cases.py",
    "tests/test_fulfil_bruteforce.py",
)
#: In process, fast enough to run once per mutant on a shared two-core machine.
_SERVICE_TESTS = (
    "tests/test_store_holds.py",
    "tests/test_service_lifecycle.py",
    "tests/test_place_order_races.py",
)

#: Tests that race a clock (a 0.4 s quote TTL, a tight deadline, an alert poll): under
#: mutmut's tracing on a loaded machine they fail unmutated, and test nothing locked.
_SLOW_OR_TIMED = "not expiry and not deadline and not alerts"

TARGETS: dict[str, Target] = {
    "costs": Target(
        "src/sourcing/costs.py", ("sourcing.costs.*",), _SOLVER_TESTS, quick=_QUICK_SOLVER_TESTS
    ),
    "evaluate": Target(
        "src/sourcing/evaluate.py",
        ("sourcing.evaluate.*",),
        _SOLVER_TESTS,
        quick=_QUICK_SOLVER_TESTS,
    ),
    "orders": Target(
        "src/sourcing/orders.py",
        ("sourcing.orders.*",),
        # The loader's own tests first: they are fast and kill most mutants at once (-x).
        ("tests/test_orders_loader.py", *_SOLVER_TESTS, "tests/test_cli.py"),
        quick=("tests/test_orders_loader.py", *_QUICK_SOLVER_TESTS, "tests/test_cli.py"),
    ),
    "availability": Target(
        "src/sourcing/model.py",
        ("sourcing.model.xǁNetworkǁavailable_of*",),
        (*_SOLVER_TESTS, "tests/test_batch.py"),
        deselect="not dask",
    ),
    "store": Target(
        "src/oms/store/stock.py",
        tuple(
            f"oms.store.stock.xǁStockRepositoryǁ{name}__mutmut_*"
            for name in ("lock_free_units", "lock_positions", "shortages", "reserved_rows")
        ),
        _SERVICE_TESTS,
        deselect=_SLOW_OR_TIMED,
    ),
    "capacity": Target(
        "src/oms/store/capacity.py",
        ("oms.store.capacity.xǁCapacityRepositoryǁproblems__mutmut_*",),
        _SERVICE_TESTS,
        deselect=_SLOW_OR_TIMED,
    ),
    "order-keys": Target(
        "src/oms/store/orders.py",
        ("oms.store.orders.xǁOrderRepositoryǁlock_idempotency_key__mutmut_*",),
        _SERVICE_TESTS,
        deselect=_SLOW_OR_TIMED,
    ),
    "checkout": Target(
        "src/oms/checkout.py",
        tuple(
            f"oms.checkout.xǁCheckoutServicerǁ{name}__mutmut_*"
            for name in ("_try_place", "_replay")
        ),
        _SERVICE_TESTS,
        deselect=_SLOW_OR_TIMED,
    ),
    "batch": Target(
        "src/sourcing/batch/problem.py",
        tuple(
            f"sourcing.batch.problem.{name}__mutmut_*"
            for name in ("x_solve_problem", "x__satisfies", "x__cost", "x__same_node_groups")
        ),
        ("tests/test_batch.py", "tests/test_batch_guards.py"),
        # The hand-solved and small random cases; the Dask and chunking ones add minutes each.
        deselect="not dask and not chunked and not default_settings and not random_books",
    ),
}

#: What a scratch copy needs: the package, the tests, the benchmark helpers they import and
#: the example carts the CLI tests quote.
_COPY = ("src", "tests", "benchmarks", "examples", "pyproject.toml")
_RESULT = re.compile(r"^\s+(\S+__mutmut_\d+): (.+)$")


def _config(target: Target, tests: list[str]) -> str:
    selection = [*tests, "-p", "no:cacheprovider"]
    if target.deselect:
        selection += ["-k", target.deselect]
    lines = [
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f"only_mutate = [{json.dumps(target.file)}]",
        # The tests import helpers from benchmarks/ (networks, the reference pricing) and
        # the CLI tests read examples/.
        'also_copy = ["benchmarks", "examples"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(selection)}",
        'pytest_add_cli_args = ["-q", "-x"]',
        # grpc in the test process is not fork-safe: fork each mutant from a clean server.
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "timeout_multiplier = 5.0",
        "timeout_constant = 20.0",
    ]
    return "\n".join(lines) + "\n"


def _prepare(
    name: str, target: Target, source: Path, workdir: Path, fresh: bool, quick: bool
) -> tuple[Path, list[str]]:
    work = workdir / name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for entry in _COPY:
        src, dst = source / entry, work / entry
        if dst.is_dir():
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    wanted = target.quick if quick and target.quick else target.tests
    tests = [t for t in wanted if (work / t).exists()]
    missing = sorted(set(wanted) - set(tests))
    if missing:
        print(f"[{name}] not in this tree, left out: {', '.join(missing)}")
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", text)
    pyproject.write_text(text + "\n" + _config(target, tests), encoding="utf-8")
    return work, tests


def _mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    command = [str(Path(sys.executable).parent / "mutmut"), *args]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if log is None:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        return done.stdout
    with log.open("w") as out:
        subprocess.run(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    return log.read_text(errors="replace")


def run_target(
    name: str,
    target: Target,
    source: Path,
    workdir: Path,
    fresh: bool,
    max_children: int,
    only: list[str],
    quick: bool,
) -> dict[str, object]:
    work, tests = _prepare(name, target, source, workdir, fresh, quick)
    started = time.perf_counter()
    log = work / "run.log"
    what = ", ".join(target.functions)
    print(f"[{name}] mutating {target.file} ({what}); {len(tests)} test files")
    chosen = [m for m in only if _selected(m, target.functions)] if only else target.functions
    if only and not chosen:
        return {"target": name, "file": target.file, "mutants": 0, "counts": {}, "survivors": []}
    _mutmut(work, "run", "--max-children", str(max_children), *chosen, log=log)
    seconds = time.perf_counter() - started
    statuses: dict[str, str] = {}
    for line in _mutmut(work, "results", "--all", "true").splitlines():
        found = _RESULT.match(line)
        if found and _selected(found.group(1), tuple(chosen)):
            statuses[found.group(1)] = found.group(2).strip()
    survivors = sorted(k for k, v in statuses.items() if v in ("survived", "no tests"))
    text = log.read_text(errors="replace")
    if not statuses or "failed to collect stats" in text or "Failed to run clean test" in text:
        print(f"[{name}] mutmut did not test the mutants; the end of its log ({log}):")
        print(text[-3000:])
    for mutant in survivors:
        print(_mutmut(work, "show", mutant).rstrip())
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "target": name,
        "file": target.file,
        "mutants": len(statuses),
        "counts": counts,
        "survivors": survivors,
        "seconds": round(seconds, 1),
    }


def _selected(mutant: str, globs: tuple[str, ...]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(mutant, g) for g in globs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)}")
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree to mutate and test")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / ".mutation", help="where the scratch copies go"
    )
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument(
        "--only",
        type=Path,
        help="a file of mutant names, one a line (an earlier run's survivors): test only those",
    )
    parser.add_argument(
        "--quick", action="store_true", help="only each target's direct, fast test files"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    names = args.targets or list(TARGETS)
    if args.list:
        for name in names:
            t = TARGETS[name]
            print(f"{name}: {t.file} {list(t.functions)}\n    tests: {list(t.tests)}")
            if t.quick:
                print(f"    --quick: {list(t.quick)}")
        return 0
    only = args.only.read_text().split() if args.only else []
    rows = [
        run_target(
            n,
            TARGETS[n],
            args.source.resolve(),
            args.workdir,
            args.fresh,
            args.max_children,
            only,
            args.quick,
        )
        for n in names
    ]
    print(f"\n{'target':<13}{'mutants':>8}{'killed':>8}{'survived':>9}{'other':>7}{'s':>8}")
    for row in rows:
        counts: dict[str, int] = row["counts"]  # type: ignore[assignment]
        row.setdefault("seconds", 0.0)
        killed = counts.get("killed", 0)
        survived = len(row["survivors"])  # type: ignore[arg-type]
        other = int(row["mutants"]) - killed - survived  # type: ignore[call-overload]
        print(
            f"{row['target']:<13}{row['mutants']:>8}{killed:>8}{survived:>9}{other:>7}"
            f"{row['seconds']:>8}"
        )
    summary = args.workdir / f"summary-{'-'.join(names)}.json"
    summary.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"JSON: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
