"""The command line (the orchestrator's only argparse; usage in orchestrator/README.md); exit statuses: errors.py."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterable, Sequence

from cil_core.config import parse_set_items
from cil_core.errors import UserError

from . import schema
from .cluster import precheck_address
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TRIALS_FAILED, OrchestratorError, SweepError
from .lock import ResultsLock
from .status import TrialStatus, collect, failure_lines, finished_result, format_status
from .store import TRIALS, Store
from .sweep import load_sweep, parse_resources
from .trials import axis_counts, check_sweep, estimate_hours, expand, iter_trials, parse_only, select
from .tune_runner import RunOptions, run_sweep

log = logging.getLogger("orchestrator")
# report and search (pandas, matplotlib) are imported where used: --help, --dry-run and status start fast


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator", description=(
        "Expand a sweep file into trials, run them with Ray Tune (here or on a cluster), then build the paper's "
        "tables. Other commands: 'status RESULTS_DIR', 'report RESULTS_DIR [--check]', 'evaluate-best SWEEP'."))
    add = p.add_argument
    add("sweep", help="the sweep file (YAML; see sweeps/README.md)")
    add("--dry-run", action="store_true", help="list the trials, counts per axis and estimated GPU hours; run nothing")
    add("--results", metavar="DIR", help="results directory or URI every node reaches (default results/<sweep name>/)")
    add("--address", metavar="ADDR", help="a Ray cluster: 'auto' or HOST:PORT (default $RAY_ADDRESS, else embedded)")
    add("--max-failures", type=int, default=2, metavar="N", help="retries of a failed trial in this run (default 2)")
    add("--retry-failed", action="store_true", help="also rerun trials that failed permanently in an earlier run")
    add("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
        help="a training option for every trial, e.g. epochs=2 (repeatable)")
    add("--only", dest="only_items", action="append", default=[], metavar="AXIS=V1,V2",
        help="run only these values of an axis (dataset, scenario, split as 20/5, approach, seed); repeatable")
    add("--resources", metavar="gpu=N,cpu=N", help="override every trial's resource request")
    add("--num-cpus", type=int, help="embedded Ray only: CPUs it may use (default: all)")
    add("--num-gpus", type=int, help="embedded Ray only: GPUs it may use (default: all)")
    add("--no-resource-check", action="store_true", help="do not require a node that can host each trial (autoscaling)")
    add("--no-report", action="store_true", help="do not build the tables at the end")
    add("--runner", default=None, help=argparse.SUPPRESS)  # MODULE:FUNCTION replacing cil_core:run_experiment (tests)
    add("-q", "--quiet", action="store_true", help="warnings and the final tables only")
    add("--evaluate-best", action="store_true", help="after a search: rerun its best and default configuration over "
        "search.eval_seeds (in RESULTS/evaluate/), test mean ± std side by side; also 'evaluate-best SWEEP'")
    return p


def _results_parser(command: str) -> argparse.ArgumentParser:
    """``status`` and ``report`` read the results directory's files only (Ray need not run)."""
    p = argparse.ArgumentParser(prog=f"python -m orchestrator {command}", description={
        "status": "Done / running / failed per trial, read from the files (Ray need not run).",
        "report": "Write tables.md/.csv/.tex and plots from the finished trials; print the tables."}[command])
    p.add_argument("results", help="the results directory or URI")
    if command == "status":
        p.add_argument("--pending", action="store_true", help="list only trials that are not done")
        p.add_argument("--tail", type=int, default=10, help="lines of stderr shown per failed trial (default 10)")
    else:
        p.add_argument("--check", action="store_true", help="exit 1 if a finished cell is outside its tolerance")
        p.add_argument("--no-plots", action="store_true")
        p.add_argument("--reference", help=argparse.SUPPRESS)  # another paper_results.csv (tests)
    return p


DRY_RUN_ROWS = 2000  # above this many trials, --dry-run lists a sample (the first and last rows)
SAMPLE_ROWS = 20


def format_dry_run(trials: Iterable, sweep: Any, store: Any) -> str:
    """The trials (all, or the first and last rows of a huge grid), counts per axis and the estimated
    cost; streams ``trials`` once, holding only the sample, the counters and one int per distinct run."""
    finished = {tid for tid in store.list_dirs(TRIALS) if finished_result(store, tid)}
    seen, unique, head, tail = set(), [], [], deque(maxlen=DRY_RUN_ROWS)

    def sampled() -> Iterable:
        for t in trials:
            if hash(t.id) not in seen:
                seen.add(hash(t.id))
                unique.extend([t] if len(unique) <= DRY_RUN_ROWS else [])  # the first distinct runs, for the cost
            (head if len(head) < SAMPLE_ROWS else tail).append(t)
            yield t

    counts = axis_counts(sampled())
    total, done = sum(counts["seed"].values()), sum(hash(tid) in seen for tid in finished)
    shown = list(tail) if total <= DRY_RUN_ROWS + SAMPLE_ROWS else list(tail)[-SAMPLE_ROWS:]
    header = ["#", "trial", "dataset", "scenario", "split", "approach", "seed", "gpu", "cpu", "hours", "state"]
    rows = [header] + [
        [str(i), t.id, t.dataset, t.scenario, f"{t.split[0]} {t.split[1]}", t.variant, str(t.seed),
         f"{t.resources.get('gpu', 0):g}", f"{t.resources.get('cpu', 1):g}",
         "-" if t.hours is None else f"{t.hours:.2f}", "done" if t.id in finished else "to run"]
        for i, t in [*enumerate(head, 1), *enumerate(shown, total - len(shown) + 1)]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if j in (0, 6, 7, 8, 9) else c.ljust(w)
                       for j, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    if total > DRY_RUN_ROWS + SAMPLE_ROWS:
        lines.insert(SAMPLE_ROWS + 1, f"... {total - len(rows) + 1} more trials ...")
    count = f"{total} trials" + (f" ({len(seen)} distinct runs)" if len(seen) != total else "")
    if (search := sweep.search) is not None:
        count += f" x {search.num_samples} samples ({search.searcher} search over {', '.join(search.space)})"
    lines += ["", f"sweep {sweep.name}: {count}"]
    for axis, counter in counts.items():
        text = ", ".join(f"{k} {v}" for k, v in list(counter.items())[:SAMPLE_ROWS])
        lines.append(f"  {axis:<9} {text}{', ...' if len(counter) > SAMPLE_ROWS else ''}  ({len(counter)} values)")
    est, extrapolate = estimate_hours(unique), len(seen) / max(1, len(unique))
    scale = (search.num_samples if search is not None else 1) * extrapolate
    cost = f"estimated cost: {est['gpu_hours'] * scale:.1f} GPU hours"
    cost += f" + {est['cpu_hours'] * scale:.1f} CPU-core hours" if est["cpu_hours"] else ""
    cost += f" ({est['trial_hours'] * scale:.1f} trial hours"
    cost += f"; {round(est['unknown'] * extrapolate)} trials without a cost estimate)" if est["unknown"] else ")"
    lines.append(cost + ("" if len(unique) == len(seen) else f" [extrapolated from {len(unique)} of {len(seen)} runs]"))
    lines.append(f"results: {store.root} ({done} of {len(seen)} already finished)")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    where, sweep = args.sweep, load_sweep(args.sweep)
    if args.max_failures < 0:
        raise SweepError("--max-failures", None, f"must be >= 0 (retries of a failed trial), got {args.max_failures}")
    try:  # typed by cil_core with the rest of each trial's options
        set_values = schema.check_options(parse_set_items(args.set_items))
    except (UserError, ValueError) as exc:
        raise SweepError("--set", None, str(exc).removeprefix("--set ")) from None
    if dropped := check_sweep(sweep, where=where, set_values=set_values):
        log.warning("warning: cil_core has no approach %s yet; those trials are left out (skip_missing_approaches)",
                    ", ".join(map(repr, dropped)))
    kwargs = dict(where=where, set_values=set_values, resources=parse_resources(args.resources),
                  drop_approaches=dropped)
    wanted = parse_only(args.only_items)
    store = Store(args.results or f"results/{sweep.name}")
    if args.dry_run and not wanted and not args.evaluate_best:
        print(format_dry_run(iter_trials(sweep, **kwargs), sweep, store))
        return EXIT_OK
    trials, best_text = expand(sweep, **kwargs), None
    if args.evaluate_best:  # the search's best and default configs x seeds: an ordinary grid
        from .search import evaluation

        sweep, trials, store, best_text = evaluation(sweep, trials, store, where)
    chosen = select(trials, wanted)
    slice_ids = {t.id for t in chosen} if wanted else None  # None: the whole sweep
    if args.dry_run:
        print(format_dry_run(chosen, sweep, store))
        return EXIT_OK
    precheck_address(args.address or os.environ.get("RAY_ADDRESS") or None)  # a wrong address is bad input
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))  # SIGTERM: as Ctrl-C
    try:
        with ResultsLock(store, command=" ".join(["python -m orchestrator", *sys.argv[1:]])):
            opts = RunOptions(store=store, where=where, address=args.address, max_failures=args.max_failures,
                              retry_failed=args.retry_failed, runner=args.runner,
                              resource_check=not args.no_resource_check, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                              only_ids=slice_ids, quiet=args.quiet)
            statuses, incomplete = run_sweep(sweep, trials, opts, sweep_text=Path(where).read_text())
            if not args.no_report:
                from .report import build_report

                report = build_report(store)
                print((best_text + "\n" if best_text else "") + report.text)
                more = f" and {len(report.files) - 4} more" if len(report.files) > 4 else ""
                log.info("wrote %s", ", ".join(store.uri(f) for f in report.files[:4]) + more)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # trials outside --only are left for later, and a sample stopped early by the search is no failure
    ok = ("done",) if sweep.search is None else ("done", "stopped")
    bad = [s for s in statuses if s.state not in ok and (sweep.search or slice_ids is None or s.id in slice_ids)]
    if incomplete:
        print(f"\nsearch not finished: {', '.join(incomplete)}; run the same command again to continue it",
              file=sys.stderr)
    if bad:  # the failures in full (error, config, stderr's last lines), the rest by state
        states = ", ".join(f"{n} {state}" for state, n in Counter(s.state for s in bad).most_common())
        lines = [f"\n{len(bad)} of {len(statuses)} trials did not finish ({states}):"]
        for s in (s for s in bad if s.state == "failed"):
            lines += [f"  {s.id}  [failed{', permanent' if s.permanent else ''}] {s.error or ''}",
                      *failure_lines(s, "      ", tail=8)]
        print(*lines, "Run the same command again to resume (unfinished trials continue from their last finished "
              f"task); 'python -m orchestrator status {store.root}' shows each trial.", sep="\n", file=sys.stderr)
    if bad or incomplete:
        return EXIT_TRIALS_FAILED
    log.info("%s", finished_line(statuses, slice_ids))
    return EXIT_OK


def finished_line(statuses: list[TrialStatus], slice_ids: set[str] | None) -> str:
    """The closing line of a successful run; with --only it must not claim the whole sweep is done."""
    stopped = sum(s.state == "stopped" for s in statuses)
    early = f" ({stopped} stopped early by the search)" if stopped else ""
    if slice_ids is None:
        return f"all {len(statuses)} trials finished{early}"
    left = sum(s.id not in slice_ids and s.state != "done" for s in statuses)
    later = f"; {left} of the sweep's {len(statuses)} are left for later" if left else "; the whole sweep is done"
    return f"all {len(slice_ids)} trials of the --only slice finished{early}{later}"


def _results(path: str) -> Any:
    store = Store(path)
    if store.is_local and not store.local().is_dir():
        raise OrchestratorError(f"{path}: no such results directory")
    return store


def cmd_status(args: argparse.Namespace) -> int:
    store = _results(args.results)
    print(format_status(store, collect(store, tail_lines=args.tail), show_all=not args.pending))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    store = _results(args.results)
    from .report import build_report

    report = build_report(store, plots=False if args.no_plots else None, reference_path=args.reference)
    print(report.text)
    if not report.files:
        print(f"{args.results}: no trials found", file=sys.stderr)
        return EXIT_TRIALS_FAILED if args.check else EXIT_OK
    if not args.check:
        return EXIT_OK
    outside = [c for c in report.checks if c["verdict"] == "OUTSIDE"]
    checked = sum(c["verdict"] in ("ok", "OUTSIDE") for c in report.checks)
    print(f"check: {len(outside)} of {checked} finished cells outside their tolerance:" if outside else
          f"check: {checked} finished cells within tolerance of the published numbers", file=sys.stderr)
    for c in outside:
        print(f"  {c['dataset']} {c['scenario']} {c['split']} {c['approach']}: {c['compares_to']} ours {c['ours']:.2f} "
              f"vs {c['published_as']} {c['published']:.2f} (Δ {c['diff']:+.2f}, tolerance {c['tolerance']:.1f})",
              file=sys.stderr)
    return EXIT_TRIALS_FAILED if outside else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate-best":
        argv = [*argv[1:], "--evaluate-best"]
    commands = {"status": cmd_status, "report": cmd_report}  # they read the results folder only
    if argv and argv[0] in commands:
        args, func, quiet = _results_parser(argv[0]).parse_args(argv[1:]), commands[argv[0]], True
    else:
        args = _run_parser().parse_args(argv)
        func, quiet = cmd_run, args.quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        return func(args)
    except OrchestratorError as exc:
        print("\n".join(f"error: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
