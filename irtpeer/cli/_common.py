"""Options and plumbing shared by the commands that read a ratings table and calibrate it.

``irtpeer score``, ``bias``, ``equate``, ``compare`` and ``judges`` take the same data options
(person, facets, dimension, score, scale, duplicates, score range) and estimator options
(estimator, penalty, device, ...), may read any of them from a TOML/YAML file (``--config``),
write their tables atomically and print them (or ``--json``) after the files are written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from .._errors import IrtpeerError
from .._io import parse_settings

__all__ = [
    "ESTIMATOR_FLAGS",
    "add_data_options",
    "add_estimator_options",
    "add_output_options",
    "apply_config",
    "calibrate_from_args",
    "estimator_from_args",
    "load_from_args",
    "progress_from_args",
    "require_column",
    "write_outputs",
]

#: option name -> (flag, argparse keywords). Which estimator takes which: its class's ``OPTIONS``.
ESTIMATOR_FLAGS: dict[str, tuple[str, dict]] = {
    "penalty": ("--penalty", {"type": float, "help": "L2 penalty (torch; default: 0 in model mode, 1 in response mode)"}),
    "device": ("--device", {"help": "auto | cpu | cuda (torch; default: auto)"}),
    "threads": ("--threads", {"type": int, "help": "CPU threads (torch; default: by the size of the work)"}),
    "se_facets": ("--se-facets", {"help": "facets that get full-information se when the design is too large for all (torch)"}),
    "person_prior": ("--person-prior", {"help": "normal | flat (bayes; default: normal)"}),
    "draws": ("--draws", {"type": int, "help": "posterior draws per chain (bayes)"}),
    "tune": ("--tune", {"type": int, "help": "tuning steps per chain (bayes; default 500 with nutpie, 1000 with PyMC NUTS)"}),
    "chains": ("--chains", {"type": int, "help": "chains (bayes)"}),
    "seed": ("--seed", {"type": int, "help": "random seed (bayes)"}),
    "method": ("--method", {"help": "nuts | advi | pathfinder (bayes; default: nuts)"}),
}


def _score_range(text: str):
    try:
        lo, hi = (int(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two integers), got {text!r}") from None
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"MIN must be below MAX, got {text!r}")
    return lo, hi


def add_data_options(p: argparse.ArgumentParser, *, facets_flag: str = "--facets") -> None:
    """How to read a ratings table and which model to fit (``facets_flag`` renames --facets)."""
    p.add_argument("path", nargs="?", help="ratings file (.parquet, .csv, .tsv)")
    p.add_argument("--example", action="store_true", help="use the bundled (simulated) example ratings")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML or YAML file with any of these options (keys as the long flags, "
                        "e.g. person = 'junior'); flags given on the command line win")
    p.add_argument("--person", default="model", help="person facet column (default: model)")
    p.add_argument(facets_flag, dest="facets", default=None,
                   help="facet columns of the model, comma-separated (default: question,judge,item where present)")
    p.add_argument("--dimension", default="dimension", help="dimension column (default: dimension if present; 'none' for one dimension)")
    p.add_argument("--score", default="score", help="integer score column (default: score)")
    p.add_argument("--scale", default="auto", help="auto | binary | rsm | pcm:FACET (default: auto)")
    p.add_argument("--person-mode", default="model", choices=["model", "response", "hierarchical"],
                   help="one measure per model (default), per model x question, or hierarchical (bayes)")
    p.add_argument("--duplicates", default="error", choices=["error", "keep", "mean"],
                   help="duplicated judgments: stop (default), keep, or average")
    p.add_argument("--score-range", type=_score_range, default=None, metavar="MIN,MAX",
                   help="valid score range; scores outside are an error")


def add_estimator_options(p: argparse.ArgumentParser, *, own_seed: bool = False) -> None:
    """Estimator options. ``own_seed``: the command has its own ``--seed`` (for its bootstrap or
    sampling), which also reaches the estimator when it takes a seed."""
    p.add_argument("--estimator", default="torch", help="torch (exact ML, default) | bayes (PyMC)")
    for name, (flag, kwargs) in ESTIMATOR_FLAGS.items():
        if not (own_seed and name == "seed"):
            p.add_argument(flag, default=None, **kwargs)
    p.set_defaults(_own_seed=own_seed)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")


def add_output_options(p: argparse.ArgumentParser, files: str) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=f"write {files} here")
    p.add_argument("--json", action="store_true", help="print the tables as JSON instead of text")


def _read_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise IrtpeerError(f"--config file not found: {str(p)!r}; check the path")
    if p.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise IrtpeerError(f"--config {str(p)!r}: use a .toml, .yaml or .yml file")
    data = parse_settings(p.read_text(encoding="utf-8"), p.suffix, f"--config {str(p)!r}")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise IrtpeerError(f"--config {str(p)!r} must hold a table of option = value")
    return data


def _config_options(data: dict, command: str | None) -> dict:
    """A config file's options for ``command``: its top-level values, then those of a table
    named after the command (``[score]`` in TOML, ``score:`` in YAML), which win. Tables named
    after other irtpeer commands are theirs (one file can serve several commands)."""
    from . import COMMAND_MODULES

    commands = {m.rsplit(".", 1)[-1] for m in COMMAND_MODULES}
    section = data.get(command) if command else None
    out = {k: v for k, v in data.items() if not (isinstance(v, dict) and k in commands)}
    if isinstance(section, dict):
        out.update(section)
    return out


def apply_config(args, parser: argparse.ArgumentParser) -> None:
    """Fill options not given on the command line from ``--config`` (flags win)."""
    if not getattr(args, "config", None):
        return
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "func")}
    command = getattr(args, "command", None)
    for key, value in _config_options(_read_config(args.config), command).items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions if d != "path"))
            raise IrtpeerError(f"--config: unknown option {key!r}; options are {known}")
        lists = dest in ("facets", "pair")
        if isinstance(value, dict) or (isinstance(value, list) and not lists):
            kind = "a table" if isinstance(value, dict) else "a list"
            raise IrtpeerError(
                f"--config: option {key!r} is {kind} ({value!r}); give it one value. Options go "
                f"at the top level of the file{f' or in a [{command}] table' if command else ''}"
            )
        action = actions[dest]
        if getattr(args, dest) != action.default:
            continue  # given on the command line
        if isinstance(value, list) and dest in ("facets", "pair"):
            value = ",".join(map(str, value))
        if action.type is not None and isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                value = action.type(str(value) if action.type is not float else value)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise IrtpeerError(f"--config: option {key!r}: {exc}") from None
        if action.choices is not None and value not in action.choices:
            raise IrtpeerError(
                f"--config: option {key!r} is {value!r}; choose one of {', '.join(map(str, action.choices))}"
            )
        setattr(args, dest, value)


def require_column(ratings, column: str, option: str) -> None:
    """One-line error when ``--option column`` names no column of the ratings."""
    if column not in ratings.data.columns or column.startswith("_"):
        cols = ", ".join(c for c in ratings.data.columns if not c.startswith("_"))
        raise IrtpeerError(f"{option} {column!r} is not a column of the ratings; columns are {cols}")


#: Ratings files from this size on load while the estimator's module is imported beside them.
PRELOAD_BYTES = 4 << 20


def _preload_estimator(args, path) -> None:
    """Import the estimator's module (torch: ~1.5 s of CPU) in a thread while a large ratings
    file is read on the other core. An import error is left to the real import, which reports
    it; the thread is not a daemon, so the interpreter never exits in the middle of it."""
    import contextlib
    import importlib
    import os
    import threading

    from ..estimators import ESTIMATORS

    entry = ESTIMATORS.get(getattr(args, "estimator", None) or "torch")
    try:
        large = os.path.getsize(path) >= PRELOAD_BYTES
    except OSError:
        large = False
    if entry is None or not large or entry[0] in sys.modules:
        return

    def work():
        with contextlib.suppress(Exception):  # the import in the main thread reports it
            importlib.import_module(entry[0])

    threading.Thread(target=work, name="irtpeer-preload-estimator").start()


def load_from_args(args, *, preload: bool = False):
    """The :class:`~irtpeer.Ratings` and :class:`~irtpeer.ModelSpec` the data options describe.

    ``preload``: the caller fits next, so a large file is read while the estimator's module
    is imported in a thread."""
    import irtpeer

    if args.example and args.path:
        raise IrtpeerError("give either a ratings PATH or --example, not both")
    if not args.example and not args.path:
        raise IrtpeerError("give a ratings PATH (parquet or CSV), or --example for the bundled data")
    path = irtpeer.example_path() if args.example else args.path
    if preload:
        _preload_estimator(args, path)
    dimension = None if str(args.dimension).lower() in ("none", "") else args.dimension
    ratings = irtpeer.load_ratings(
        path, person=args.person, facets=args.facets, dimension=dimension, score=args.score,
        duplicates=args.duplicates, score_range=args.score_range,
    )
    return ratings, irtpeer.ModelSpec(scale=args.scale, person_mode=args.person_mode)


def exit_now(code: int):
    """End the program without the interpreter's teardown: once torch is imported, tearing its
    modules and C++ state down takes ~0.1 s, only for the exit to free the memory anyway.
    What a normal exit does that matters is done first: the atexit callbacks run (logging,
    temporary files, the collector's freeze) and stdout and stderr are flushed. A non-daemon
    thread still alive (an executor's idle worker, a preload still importing) or a flush that
    fails takes the normal exit instead, which shuts executors down and waits for threads."""
    import atexit
    import os
    import threading

    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # they run once: the normal exit would not run them again
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)


def progress_from_args(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def estimator_from_args(args, spec, *, progress: bool | None = None):
    """The estimator named by ``--estimator`` with the options that belong to it.

    A command's own ``--seed`` goes to the estimator only if it takes a seed.
    """
    from ..estimators import get_estimator

    cls = get_estimator(args.estimator)
    own_seed = getattr(args, "_own_seed", False)
    given = {k: getattr(args, k) for k in ESTIMATOR_FLAGS
             if getattr(args, k, None) is not None and not (own_seed and k == "seed")}
    foreign = [k for k in given if k not in cls.OPTIONS]
    if foreign:
        flags = ", ".join(ESTIMATOR_FLAGS[k][0] for k in foreign)
        takes = ", ".join(ESTIMATOR_FLAGS[k][0] for k in cls.OPTIONS if k in ESTIMATOR_FLAGS)
        raise IrtpeerError(
            f"{flags} do{'es' if len(foreign) == 1 else ''} not apply to --estimator "
            f"{args.estimator} (it takes {takes or 'no options'}); drop {flags} or choose "
            f"another estimator"
        )
    if own_seed and getattr(args, "seed", None) is not None and "seed" in cls.OPTIONS:
        given["seed"] = args.seed
    progress = progress_from_args(args) if progress is None else progress
    return cls(spec, progress=progress, **given)


def calibrate_from_args(args, parser: argparse.ArgumentParser, check=None):
    """Config, ratings, estimator and the full calibration, as the data options say.

    ``check(ratings)`` runs before the fit, so a bad analysis option fails at once.
    """
    apply_config(args, parser)
    ratings, spec = load_from_args(args, preload=True)
    if check is not None:
        check(ratings)
    est = estimator_from_args(args, spec, progress=False)
    cal = est.fit(ratings).calibration_
    return ratings, est, cal


def _records(df: pd.DataFrame) -> list[dict]:
    recs = df.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in recs]


def write_outputs(args, tables: dict[str, pd.DataFrame], *, notes: list[str] = ()) -> None:
    """Write ``DIR/<name>.csv`` for every table (atomically), then print them or their JSON."""
    from .._io import atomic_write_csv, json_default

    paths = []
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise IrtpeerError(f"--out {str(out)!r} exists and is not a folder; choose a folder path")
        for name, df in tables.items():
            paths.append(atomic_write_csv(df, out / f"{name}.csv"))
    if args.json:
        doc = {name: _records(df) for name, df in tables.items()}
        if notes:
            doc["notes"] = list(notes)
        sys.stdout.write(json.dumps(doc, indent=2, default=json_default) + "\n")
    else:
        for name, df in tables.items():
            print(f"{name}:")
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(df)
                  else "  (empty)")
            print()
        for n in notes:
            print(f"note: {n}")
    if paths:
        stream = sys.stderr if args.json else sys.stdout
        print("Wrote " + ", ".join(str(p) for p in paths), file=stream)
