#!/usr/bin/env python
"""How long does the llmctl command line take, start to exit, and which imports is that time spent on?

    python benchmarks/cli_startup.py                  # every command, median of 5 runs each
    python benchmarks/cli_startup.py --runs 11        # more runs: a steadier median on a busy machine
    python benchmarks/cli_startup.py --only help plan # some commands (names as in the table)
    python benchmarks/cli_startup.py --imports        # also the heaviest packages each command imports, and who
    python benchmarks/cli_startup.py --imports --top 20 --import-runs 5

Each command is a whole new process (`python -m llmctl ...`, run by the interpreter that runs this script, with this
checkout first on PYTHONPATH), timed from spawn to exit, NO_COLOR=1 and QUICKSTART_API_KEY set, in a fresh scratch
copy of examples/quickstart (so nothing lands in the repository):

    help        llmctl --help
    validate    llmctl validate              (the quickstart)
    plan        llmctl plan                  (the quickstart)
    plan-100    llmctl plan                  (a generated config: 100 copies of the quickstart's model)
    plan-1000   llmctl plan                  (the same with 1,000 models)

Every command runs once untimed first ('first' in the table): that run compiles this checkout's bytecode, warms the
file cache and, for the quickstart's plan, writes llmops.lock beside the config (hashing the model file), so the
timed plans are warm plans of a config whose lock exists. The generated configs get their llmops.lock beforehand,
copied from the quickstart's (`llmctl lock` in a spare copy) under every model name: their own first plan would
hash the same 98 MB file once per model, minutes for 1,000 (--cold-lock does that instead). The figure is the
median wall time of --runs timed runs (min and max beside it), and the median CPU time (user + system), which a
busy machine disturbs less.

--imports runs each command under `python -X importtime` and ranks the top-level packages it imports by cumulative
time (a package's outermost imports, its own dependencies included, so numpy also counts inside gpuhunt), the median
over --import-runs runs, with the chain through which it was first imported (llmctl.cli -> llmctl.x -> deepdiff) and
every loaded llmctl/providers module that imports it at module level. That is the list of imports to make lazy.
One more, untimed, run of each command records who first asked for each package (a meta-path finder that reads the
stack): the llmctl frames above it, module level or inside which function, which -X importtime cannot tell for
imports made through importlib (importlib.resources.files, entry points): it prints those as new roots.

A report: it exits 0 whatever the timings, and 1 only when a command itself fails (its stderr is printed).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart"
OWN = ("llmctl", "providers")  # this repository's top-level packages


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    workdir: str  # a key of the scratch directories: "quickstart", "models-100", ...
    goal: float | None  # seconds
    note: str


COMMANDS = (
    Command("help", ("--help",), "quickstart", 0.3, "llmctl --help"),
    Command("validate", ("validate",), "quickstart", 0.3, "llmctl validate (quickstart)"),
    Command("plan", ("plan",), "quickstart", 0.5, "llmctl plan (quickstart, warm)"),
    Command("plan-100", ("plan",), "models-100", None, "llmctl plan (100 models, warm)"),
    Command("plan-1000", ("plan",), "models-1000", 1.5, "llmctl plan (1,000 models, warm)"),
)


class CommandFailed(Exception):
    pass


# --- scratch configs ---------------------------------------------------------------------------------------------


def make_scratch(root: Path, sizes: set[int]) -> dict[str, Path]:
    """A fresh copy of the quickstart, and one directory per size with a config of that many models."""
    dirs = {"quickstart": root / "quickstart"}
    shutil.copytree(QUICKSTART, dirs["quickstart"], ignore=shutil.ignore_patterns(".llmctl", "llmops.lock"))
    text = (QUICKSTART / "llmops.yaml").read_text()
    for size in sorted(sizes):
        target = root / f"models-{size}"
        target.mkdir()
        (target / "llmops.yaml").write_text(many_models(text, size))
        dirs[f"models-{size}"] = target
    return dirs


def model_names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"model-{i:0{width}d}" for i in range(count)]


def many_models(quickstart: str, count: int) -> str:
    """The quickstart with its one model repeated `count` times under distinct names (same pkg:// source, local
    target, prompt, guardrails, SLO and budget), so the config plans offline exactly as the quickstart does."""
    match = re.search(r"^models:\n((?:  .*\n|\n)+?)(?=^\S)", quickstart, re.MULTILINE)
    if match is None or "name: assistant" not in match.group(1):
        raise SystemExit("examples/quickstart/llmops.yaml changed shape: cannot find its `models:` section")
    model = match.group(1).rstrip("\n") + "\n"
    models = "".join(model.replace("name: assistant", f"name: {name}", 1) for name in model_names(count))
    return quickstart[: match.start(1)] + models + "\n" + quickstart[match.end(1):]


def seed_locks(root: Path, dirs: dict[str, Path], sizes: set[int], base: list[str], env: dict[str, str]) -> None:
    """Write each generated config's llmops.lock from the quickstart's (`llmctl lock` in another copy of it): the
    same source pinned under every model name. Without it the first plan of 1,000 models would hash the same model
    file 1,000 times (a file entry is resolved per model), minutes here, before the warm plans could be timed."""
    seed = root / "seed"
    shutil.copytree(dirs["quickstart"], seed)
    run([*base, "lock"], seed, env)
    lock = json.loads((seed / "llmops.lock").read_text())
    entry = lock["models"]["assistant"]
    for size in sizes:
        written = {**lock, "models": {name: entry for name in model_names(size)}}
        (dirs[f"models-{size}"] / "llmops.lock").write_text(json.dumps(written, indent=2) + "\n")


# --- running -----------------------------------------------------------------------------------------------------


def llmctl_argv() -> list[str]:
    """`python -m llmctl` when llmctl has a __main__ (the same imports as the `llmctl` script, under this
    interpreter); otherwise the `llmctl` script installed beside it."""
    if (REPO / "llmctl" / "__main__.py").is_file():
        return [sys.executable, "-m", "llmctl"]
    script = Path(sys.executable).with_name("llmctl")
    if not script.is_file():
        raise SystemExit(f"neither llmctl/__main__.py nor {script} exists: how is llmctl run?")
    return [str(script)]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["QUICKSTART_API_KEY"] = env.get("QUICKSTART_API_KEY") or "sk-startup-benchmark"  # the quickstart's key
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    # PYTHONDONTWRITEBYTECODE (set on some CI and sandbox machines) would have every run compile llmctl's sources
    # again: ~60 ms a plan that a user's machine, which keeps bytecode, never pays. The untimed first run writes it.
    for noisy in ("PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONDONTWRITEBYTECODE"):
        env.pop(noisy, None)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str], float]:
    """Wall seconds, the finished process, and its CPU seconds (user + system, its own children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        shown = " ".join("TRACER" if arg == TRACER else arg for arg in argv)
        raise CommandFailed(f"`{shown}` in {cwd} exited {done.returncode}\n"
                            f"--- stdout (last 20 lines)\n{tail(done.stdout)}\n--- stderr\n{tail(done.stderr, 60)}")
    return elapsed, done, cpu


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Timing:
    command: Command
    seconds: list[float]
    cpu: list[float]
    first: float  # the untimed first run (bytecode, file cache, the lock)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_command(command: Command, base: list[str], dirs: dict[str, Path], env: dict[str, str],
                 runs: int) -> Timing:
    argv = [*base, *command.args]
    first = run(argv, dirs[command.workdir], env)[0]
    runs_ = [run(argv, dirs[command.workdir], env) for _ in range(runs)]
    return Timing(command, [r[0] for r in runs_], [r[2] for r in runs_], first)


# --- -X importtime -----------------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    cumulative: int  # µs
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    @property
    def package(self) -> str:
        return self.name.partition(".")[0]

    def chain(self) -> list[str]:
        names, node = [], self.parent
        while node is not None:
            names.append(node.name)
            node = node.parent
        return [*reversed(names), self.name]


_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[Node]:
    """The import tree: -X importtime prints each module when its import ends (children first), indented by depth."""
    pending: dict[int, list[Node]] = {}
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        depth = (len(match.group(3)) - 1) // 2
        node = Node(match.group(4), int(match.group(2)), pending.pop(depth + 1, []))
        for child in node.children:
            child.parent = node
        pending.setdefault(depth, []).append(node)
    return pending.get(0, [])


@dataclass
class PackageCost:
    package: str
    cumulative: int  # µs, the sum over its outermost imports
    first: Node  # its first outermost import


def package_costs(roots: list[Node]) -> tuple[dict[str, PackageCost], int]:
    """Per top-level package: the cumulative time of its outermost imports (those with no ancestor of the same
    package); and the whole import time (the roots' sum)."""
    costs: dict[str, PackageCost] = {}

    def visit(node: Node, open_packages: frozenset[str]) -> None:
        if node.package not in open_packages:
            cost = costs.setdefault(node.package, PackageCost(node.package, 0, node))
            cost.cumulative += node.cumulative
        inner = open_packages | {node.package}
        for child in node.children:
            visit(child, inner)

    for root in roots:
        visit(root, frozenset())
    return costs, sum(root.cumulative for root in roots)


def module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


_toplevel_cache: dict[str, set[str]] = {}


def toplevel_imports(module: str) -> set[str]:
    """Modules that `module` (of this repository) imports at module level: outside functions and classes, and
    outside `if TYPE_CHECKING:`; `from a.b import c` counts as a.b and a.b.c."""
    if module in _toplevel_cache:
        return _toplevel_cache[module]
    found: set[str] = set()
    path = module_file(module)
    if path is not None:
        is_package = path.name == "__init__.py"

        def absolute(level: int, name: str | None) -> str:
            if level == 0:
                return name or ""
            parts = module.split(".")
            base = parts if is_package else parts[:-1]
            base = base[: len(base) - (level - 1)]
            return ".".join([*base, *([name] if name else [])])

        def scan(statements: list[ast.stmt]) -> None:
            for statement in statements:
                if isinstance(statement, ast.Import):
                    found.update(alias.name for alias in statement.names)
                elif isinstance(statement, ast.ImportFrom):
                    source = absolute(statement.level, statement.module)
                    found.add(source)
                    found.update(f"{source}.{alias.name}" for alias in statement.names)
                elif isinstance(statement, ast.If):
                    if "TYPE_CHECKING" not in ast.unparse(statement.test):
                        scan(statement.body)
                    scan(statement.orelse)
                elif isinstance(statement, ast.Try):
                    scan(statement.body)
                    for handler in statement.handlers:
                        scan(handler.body)
                    scan(statement.orelse)
                    scan(statement.finalbody)
                elif isinstance(statement, ast.With):
                    scan(statement.body)

        scan(ast.parse(path.read_text(), str(path)).body)
    _toplevel_cache[module] = found
    return found


def imports_package(module: str, package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in toplevel_imports(module))


# Run in the measured process (python -c TRACER ARGS...) before llmctl: a meta-path finder that, the first time a
# top-level package is looked for, records who asked: the nearest caller outside importlib, and the frames of this
# repository on the stack (module level or inside which function). -X importtime cannot say who imported a package
# through importlib.import_module, importlib.resources or an entry point: it shows such imports as new roots.
TRACER = """
import atexit, json, os, sys
def _install(repo=os.environ.pop("LLMCTL_STARTUP_REPO"), out=os.environ.pop("LLMCTL_STARTUP_TRACE")):
    own_dirs = tuple(os.path.join(repo, p) + os.sep for p in ("llmctl", "providers"))
    seen = {}
    class Tracer:
        @staticmethod
        def find_spec(name, path=None, target=None):
            top = name.partition(".")[0]
            if top in seen:
                return None
            frame, importer, own = sys._getframe(1), None, []
            while frame is not None:
                filename = frame.f_code.co_filename
                if importer is None and "importlib" not in filename and filename != "<string>":
                    importer = frame.f_globals.get("__name__")
                if filename.startswith(own_dirs):
                    own.append([frame.f_globals.get("__name__"), frame.f_code.co_name, frame.f_lineno])
                frame = frame.f_back
            seen[top] = {"module": name, "importer": importer, "own": own[::-1]}
            return None
    sys.meta_path.insert(0, Tracer)
    def dump():
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("llmctl", "providers"))
        with open(out, "w") as f:
            json.dump({"packages": seen, "loaded": loaded}, f)
    atexit.register(dump)
_install()
del _install
import runpy
sys.argv[0] = "llmctl"
runpy.run_module("llmctl", run_name="__main__", alter_sys=True)
"""


@dataclass
class ImportReport:
    command: Command
    total: int  # µs, median
    costs: list[tuple[str, int, PackageCost]]  # package, median µs, the cost of one run (for its chain)
    own_modules: list[str]
    traced: dict[str, dict]  # top-level package -> who first looked for it (TRACER)


def import_report(command: Command, base: list[str], dirs: dict[str, Path], env: dict[str, str],
                  runs: int) -> ImportReport:
    script = base[1:] if base[0] == sys.executable else base  # ["-m", "llmctl"], or the llmctl script
    argv = [sys.executable, "-X", "importtime", *script, *command.args]
    per_run, totals = [], []
    for _ in range(runs):
        done = run(argv, dirs[command.workdir], env)[1]
        costs, total = package_costs(parse_importtime(done.stderr))
        per_run.append(costs)
        totals.append(total)
    packages = set().union(*per_run)
    medians = [(name, int(statistics.median(r[name].cumulative if name in r else 0 for r in per_run)),
                next(r[name] for r in per_run if name in r)) for name in packages]
    medians.sort(key=lambda row: -row[1])
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:  # one more run, traced (not timed)
        run([sys.executable, "-c", TRACER, *command.args], dirs[command.workdir],
            {**env, "LLMCTL_STARTUP_REPO": str(REPO), "LLMCTL_STARTUP_TRACE": trace.name})
        traced = json.loads(Path(trace.name).read_text())
    return ImportReport(command, int(statistics.median(totals)), medians, traced["loaded"], traced["packages"])


def frame_text(module: str, function: str, line: int) -> str:
    return f"{module} (module level, line {line})" if function == "<module>" else f"{module}.{function}():{line}"


def describe_chain(cost: PackageCost, report: ImportReport) -> list[str]:
    """Where the package was first imported from: the frames of this repository on the stack (the import to make
    lazy is the last one), or -X importtime's chain; and every loaded module of this repository that imports it at
    module level (each needs the same change, or the import just moves there)."""
    chain = cost.first.chain()
    trace = report.traced.get(cost.package)
    if chain[0] in ("site", "encodings") or chain[0].startswith("_"):
        lines = ["      interpreter start-up (site, .pth files) first: " + " -> ".join(chain)]
    elif trace is not None and trace["own"]:
        module, function, _ = trace["own"][-1]
        when = "at module level" if function == "<module>" else f"at run time, in {module}.{function}()"
        via = f" (through {trace['importer']})" if trace["importer"] != module else ""
        frames = [frame_text(*f) for f in trace["own"][-5:] if f[0] != "__main__"]
        lines = [f"      first imported {when}{via}: " + " -> ".join([*frames, trace["module"]])]
    else:
        lines = ["      first imported with no llmctl code on the stack: " + " -> ".join(chain)]
    if cost.package not in sys.stdlib_module_names:
        others = [m for m in report.own_modules if imports_package(m, cost.package)]
        if others:
            lines.append("      imported at module level by: " + ", ".join(others))
    return lines


# --- output ------------------------------------------------------------------------------------------------------


def print_table(timings: list[Timing], runs: int, baseline: tuple[float, float], cold_lock: bool) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nWhole-process wall time, median of {runs} runs after one untimed run "
          f"({date.today().isoformat()}, {os.cpu_count()} CPUs, load average {load}, "
          f"Python {sys.version.split()[0]}):\n")
    header = (f"{'command':<34} {'median s':>9} {'min':>6} {'max':>6} {'first':>6} {'goal s':>7} {'ratio':>6}  "
              f"{'met':<8}{'cpu s':>6}")
    print(header)
    print("-" * len(header))
    print(f"{'python -c pass (the floor)':<34} {baseline[0]:>9.3f} {'':>6} {'':>6} {'':>6} {'':>7} {'':>6}  "
          f"{'':<8}{baseline[1]:>6.3f}")
    for timing in timings:
        goal, median = timing.command.goal, timing.median
        ratio = f"{median / goal:.2f}" if goal else "-"
        met = ("met" if median <= goal else "NOT met") if goal else "-"
        print(f"{timing.command.note:<34} {median:>9.3f} {min(timing.seconds):>6.3f} {max(timing.seconds):>6.3f} "
              f"{timing.first:>6.3f} {(f'{goal:.2f}' if goal else '-'):>7} {ratio:>6}  {met:<8}"
              f"{statistics.median(timing.cpu):>6.3f}")
    lock = ("the generated configs' first plan pinned every model itself (--cold-lock)" if cold_lock else
            "the generated configs' llmops.lock was written beforehand from the quickstart's")
    print(f"\n'first' is the untimed first run: for the quickstart's plan, the one that wrote llmops.lock (hashing "
          f"the model file); {lock}.\n'cpu s' is the median user+system CPU time of the timed runs: on a busy machine "
          f"it moves less than the wall time, and it is what lazy imports save.")


def print_imports(report: ImportReport, top: int, runs: int) -> None:
    print(f"\n== {report.command.note}: {report.total / 1000:.0f} ms of imports in all "
          f"(-X importtime, median of {runs}); heaviest top-level packages, cumulative:")
    own = report.own_modules
    print(f"  {len(own)} modules of this repository loaded: {', '.join(own)}")
    shown = [row for row in report.costs if row[0] not in OWN][:top]
    for package, micros, cost in shown:
        kind = " (stdlib)" if package in sys.stdlib_module_names else ""
        outer = next((n for n in reversed(cost.first.chain()[:-1]) if n.partition(".")[0] not in OWN), None)
        inside = f", counted in {outer.partition('.')[0]}'s time too" if outer else ""
        print(f"  {micros / 1000:8.1f} ms  {package}{kind}{inside}")
        for line in describe_chain(cost, report):
            print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in COMMANDS], help="these commands only")
    parser.add_argument("--imports", action="store_true", help="also rank each command's imports (-X importtime)")
    parser.add_argument("--top", type=int, default=12, help="packages shown per command with --imports (default 12)")
    parser.add_argument("--import-runs", type=int, default=3,
                        help="-X importtime runs per command, median per package (default 3)")
    parser.add_argument("--cold-lock", action="store_true",
                        help="do not pre-write the generated configs' llmops.lock: their untimed first plan pins "
                             "every model itself (hashing the model file once per model: minutes for 1,000)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and print where it is")
    args = parser.parse_args()
    if args.runs < 1 or args.import_runs < 1:
        parser.error("--runs and --import-runs must be at least 1")

    commands = [c for c in COMMANDS if not args.only or c.name in args.only]
    sizes = {int(c.workdir.split("-")[1]) for c in commands if c.workdir.startswith("models-")}
    scratch = Path(tempfile.mkdtemp(prefix="llmctl-startup-"))
    env, base = environment(), llmctl_argv()
    try:
        dirs = make_scratch(scratch, sizes)
        print(f"Running {' '.join(base)} ... (PYTHONPATH={REPO}) in {scratch}", flush=True)
        if sizes and not args.cold_lock:
            seed_locks(scratch, dirs, sizes, base, env)
        floor = [run([sys.executable, "-c", "pass"], scratch, env) for _ in range(args.runs)]
        baseline = (statistics.median(r[0] for r in floor), statistics.median(r[2] for r in floor))
        timings = []
        for command in commands:
            print(f"  {command.note} ...", flush=True)
            timings.append(time_command(command, base, dirs, env, args.runs))
        print_table(timings, args.runs, baseline, args.cold_lock)
        if args.imports:
            for command in commands:
                print_imports(import_report(command, base, dirs, env, args.import_runs), args.top, args.import_runs)
    except CommandFailed as exc:
        print(f"\nA command failed:\n{exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nKept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
