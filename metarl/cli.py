"""The ``metarl`` command: ``train``, ``evaluate``, ``record``, ``bench``, ``configs``, ``config show``,
``envs``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarl.checkpoint import CheckpointError
from metarl.config import ConfigError


def _threads() -> None:
    """One torch thread unless the user says otherwise (METARL_THREADS): see docs/guide.md, 'Threads'."""
    import torch

    torch.set_num_threads(int(os.environ.get("METARL_THREADS", "1")))


def _allocator() -> None:
    """Keep freed memory in the process (:mod:`metarl.allocator`: a 39% shorter meta-update on the paper's
    HalfCheetah) unless METARL_KEEP_FREED_MEMORY=0; docs/guide.md, 'Threads, memory, devices and scaling out'."""
    if os.environ.get("METARL_KEEP_FREED_MEMORY", "1") != "0":
        from metarl.allocator import keep_freed_memory

        keep_freed_memory()


def _baselines(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--baseline {item!r}: expected NAME=RUN_DIR, e.g. --baseline pretrained=runs/pre-1")
        name, path = item.split("=", 1)
        out[name] = path
    return out


def _baseline_lrs(items: list[str]) -> dict[str, float]:
    """``--baseline-lr NAME=LR`` items as ``{name: lr}``; a malformed one is refused in one line."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--baseline-lr {item!r}: expected NAME=LR with LR a number, e.g. --baseline-lr "
                              "pretrained=0.2") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from metarl.config import load_config, parse_overrides
    from metarl.training import train

    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.resume:
        if args.config:
            print(f"[metarl] --resume: using the config saved in {args.resume}; {args.config} is ignored",
                  file=sys.stderr)
        if args.overwrite:
            raise ConfigError("--overwrite starts a run again and --resume continues one: pass one of them")
        train(resume=args.resume, overrides=parse_overrides(overrides), time_limit_s=_minutes(args.time_limit))
        return 0
    if not args.config:
        raise ConfigError("metarl train needs a CONFIG (a shipped name such as sinusoid, see `metarl configs`, or a "
                          "YAML file) or --resume DIR")
    cfg = load_config(args.config, overrides)
    train(cfg, logdir=args.logdir, overwrite=args.overwrite, time_limit_s=_minutes(args.time_limit))
    return 0


def _minutes(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ConfigError(f"--time-limit: got {value}; expected minutes > 0, e.g. --time-limit 30")
    return None if value is None else 60.0 * value


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metarl.config import parse_overrides
    from metarl.evaluate import evaluate, format_table, plot

    if args.task_set is not None:
        clash = [flag for flag, value in (("--tasks", args.tasks is not None), ("--task", args.task),
                                           ("--metaworld-official", args.metaworld_official)) if value]
        if clash:
            raise ConfigError(f"--task-set and {' and '.join(clash)}: --task-set gives the held-out tasks itself; "
                              f"use one of them")
    if len(args.runs) > 1:
        return _evaluate_several(args)
    args.run = args.runs[0]
    if args.metaworld_official:
        return _metaworld_official(args)
    figure_run = _figure_run(args)  # before evaluating: a run without a figure fails at once
    if args.task:
        _evaluate_tasks(args)
    else:
        result = evaluate(
            args.run, n_tasks=args.tasks, steps=args.steps, shots=args.shots, seed=args.seed,
            baselines=_baselines(args.baseline), pretrain_iterations=args.pretrain_iterations,
            overrides=parse_overrides(args.set), baseline_lrs=_baseline_lrs(args.baseline_lr), task_set=args.task_set,
        )
        print(format_table(result))
        _write_result(args, result, "eval.json", plot)
    if figure_run is not None:
        _write_figure(args, figure_run)
    return 0


def _default_out(run: str | Path, name: str) -> Path:
    """Where an evaluation of ``run`` (a run directory or a checkpoint) writes ``name`` without ``--out``."""
    run = Path(run)
    return (run if run.is_dir() else run.parent) / name


def _evaluate_several(args: argparse.Namespace) -> int:
    """``metarl evaluate RUN1 RUN2 ...``: each run evaluated as if alone (its table), all on the same held-out
    tasks, then the pooled table (IQM with a stratified-bootstrap 95% interval, mean of the run means and their
    range). With ``--out`` the pooled JSON holds every run's result too (``per_run``) and no run's own
    ``eval.json`` is touched, so pooling runs under other settings loses no earlier evaluation; without it each
    result goes to its ``RUN/eval.json``."""
    from metarl.config import parse_overrides
    from metarl.evaluate import evaluate, format_pooled, format_table, pool_runs, write_json

    single = [flag for flag, value in (("--figure", args.figure), ("--task", args.task), ("--plot", args.plot),
                                        ("--baseline", args.baseline), ("--baseline-lr", args.baseline_lr)) if value]
    if single:
        raise ConfigError(f"{', '.join(single)}: for one run only; with several runs `metarl evaluate` pools "
                          "them (evaluate each run alone for that)")
    if args.metaworld_official:
        return _metaworld_official_several(args)
    overrides = parse_overrides(args.set)
    _check_poolable(args, overrides)
    results = []
    for run in args.runs:
        result = evaluate(run, n_tasks=args.tasks, steps=args.steps, shots=args.shots, seed=args.seed,
                          pretrain_iterations=args.pretrain_iterations, overrides=overrides, task_set=args.task_set)
        print(f"{run}: {format_table(result)}\n")
        if not args.out:
            out = _default_out(run, "eval.json")
            write_json(result, out)
            print(f"[metarl] wrote {out}", file=sys.stderr)
        results.append(result)
    pooled = {"runs": [str(run) for run in args.runs], **pool_runs(results)}
    print(format_pooled(pooled))
    if args.out:
        if "tasks" in results[0]:  # the same for every run (pool_runs checks): once, so --task-set OUT reads them
            pooled["tasks"] = results[0]["tasks"]
        pooled["per_run"] = [{key: value for key, value in r.items() if key != "tasks"} for r in results]
        write_json(pooled, args.out)
        print(f"[metarl] wrote {args.out} (the pooled table and each run's result)", file=sys.stderr)
    return 0


def _check_poolable(args: argparse.Namespace, overrides: list[tuple[str, Any]]) -> None:
    """Before evaluating anything: the runs are of one benchmark (family and name), get the same number
    of tasks and steps, and write their ``eval.json`` to different places."""
    from metarl.checkpoint import load_checkpoint
    from metarl.config import config_from_dict

    seen: dict[Path, str] = {}
    what = {}
    for run in args.runs:
        out = _default_out(run, "eval.json")
        if out.resolve() in seen:
            raise ConfigError(f"{seen[out.resolve()]} and {run} are one run (both would write {out}); "
                              "give each run once")
        seen[out.resolve()] = run
        cfg = config_from_dict(load_checkpoint(run)["config"], overrides)
        what[run] = {"benchmark": f"{cfg.name} ({cfg.benchmark})",
                     "--tasks": args.task_set or (args.tasks if args.tasks is not None else cfg.eval.test_tasks),
                     "--steps": args.steps if args.steps is not None else cfg.inner.test_steps}
    first = args.runs[0]
    for key, value in what[first].items():
        other = next((run for run in args.runs if what[run][key] != value), None)
        if other is not None:
            hint = "pool runs of one benchmark" if key == "benchmark" else f"give {key} explicitly"
            raise ConfigError(f"cannot pool runs of different {key.lstrip('-')}: {first} has {value}, {other} has "
                              f"{what[other][key]}; {hint}")


def _metaworld_official(args: argparse.Namespace) -> int:
    """``metarl evaluate RUN --metaworld-official``: Meta-World's own metalearning_evaluation, unchanged
    (its defaults; ``--steps`` sets its adaptation steps), written as JSON."""
    from metarl.evaluate import write_json

    result, _ = _official_one(args.run, args.steps, reuse=False)
    out = args.out or _default_out(args.run, "metaworld_eval.json")
    write_json(result, out)
    print(f"[metarl] wrote {out}", file=sys.stderr)
    return 0


def _metaworld_official_several(args: argparse.Namespace) -> int:
    """``metarl evaluate RUN1 RUN2 ... --metaworld-official``: each run's official evaluation (its
    ``RUN/metaworld_eval.json`` reused when it holds the same evaluation of the run's current checkpoint,
    else run and written there), then pooled: mean success rate over runs, their range and a 95%
    bootstrap interval (:func:`metarl.rl.metaworld_agent.pool_official`), written to ``--out`` if given."""
    from metarl.evaluate import write_json
    from metarl.rl.metaworld_agent import pool_official

    outs: dict[Path, str] = {}
    for run in args.runs:
        out = _default_out(run, "metaworld_eval.json").resolve()
        if out in outs:
            raise ConfigError(f"{outs[out]} and {run} would both write {out}; give each run (directory) once")
        outs[out] = run
    if args.out and Path(args.out).resolve() in outs:
        raise ConfigError(f"--out {args.out}: that is a run's own metaworld_eval.json; give the pooled JSON "
                          "another name, e.g. --out official_pooled.json")
    results = []
    for run in args.runs:
        result, fresh = _official_one(run, args.steps, reuse=True)
        if fresh:
            out = _default_out(run, "metaworld_eval.json")
            write_json(result, out)
            print(f"[metarl] wrote {out}", file=sys.stderr)
        results.append(result)
    pooled = {"runs": [str(run) for run in args.runs], **pool_official(results)}
    lo, hi = pooled["ci"]
    level = round(100 * pooled["bootstrap"]["level"])
    print(f"Meta-World {pooled['benchmark']} (official evaluation), {pooled['n_runs']} runs: success rate "
          f"{pooled['success_rate']:.3f} [{level}% bootstrap CI {lo:.3f}, {hi:.3f}], runs "
          f"{', '.join(f'{r:.3f}' for r in pooled['success_rates'])}; return {pooled['return']:.4g}")
    if args.out:
        write_json(pooled, args.out)
        print(f"[metarl] wrote {args.out}", file=sys.stderr)
    return 0


def _official_one(path: str, steps: int | None, *, reuse: bool) -> tuple[dict[str, Any], bool]:
    """One run's official evaluation, printed, and whether it was run now; with ``reuse``, its stored
    ``metaworld_eval.json`` instead when that is the evaluation these settings would give of the run's
    current checkpoint (an unreadable file is evaluated again)."""
    import metarl
    from metarl.rl import metaworld_agent

    run = metarl.load(path)
    kwargs = {} if steps is None else {"adaptation_steps": steps}
    stored_path = _default_out(path, "metaworld_eval.json")
    if reuse and stored_path.is_file():
        try:
            stored = json.loads(stored_path.read_text())
        except (OSError, ValueError):
            stored = {}
        if (isinstance(stored, dict)
                and metaworld_agent.same_official_evaluation(stored, metaworld_agent.official_settings(run, **kwargs))):
            print(f"[metarl] {path}: reusing {stored_path} (the same evaluation of iteration {run.iteration})",
                  file=sys.stderr)
            _print_official(stored, run.iteration)
            return stored, False
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:  # one line per round: the evaluation takes minutes
        print(f"[metarl] Meta-World evaluation: round {done + 1}/{total} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)

    result = metaworld_agent.official_evaluation(run, progress=progress, **kwargs)
    _print_official(result, run.iteration)
    return result, True


def _print_official(result: dict[str, Any], iteration: int) -> None:
    print(f"Meta-World {result['benchmark']} (official evaluation, it {iteration}): success rate "
          f"{result['success_rate']:.3f}, return {result['return']:.4g}")


def _figure_run(args: argparse.Namespace) -> Any:
    """With ``--figure``: the run (``--set`` applied), checked to have a figure and the path to be an image."""
    if not args.figure:
        return None
    from metarl.config import parse_overrides
    from metarl.figures import check_figure_path, figure_for, load_run

    check_figure_path(args.figure)
    run = load_run(args.run, parse_overrides(args.set))
    figure_for(run.config)
    return run


def _write_figure(args: argparse.Namespace, run: Any) -> None:
    """``--figure FILE``: the run's behaviour before and after adapting, on the ``--task`` tasks if given."""
    from metarl.figures import write_figure

    tasks = None
    if args.task:
        from metarl.rl.build import make_env
        from metarl.rl.watch import parse_task

        env = make_env(run.config)
        try:
            tasks = [parse_task(env, text) for text in args.task]
        finally:
            env.close()
    write_figure(run, args.figure, tasks=tasks, steps=args.steps, seed=args.seed, shots=args.shots)
    print(f"[metarl] wrote {args.figure}", file=sys.stderr)


def _write_result(args: argparse.Namespace, result: dict[str, Any], default_name: str,
                  plot: Callable[[dict[str, Any], str], None]) -> int:
    """Write an evaluation's JSON (``--out``, else ``default_name`` in the run directory) and its plot."""
    from metarl.evaluate import write_json

    out = args.out if args.out is not None else _default_out(args.run, default_name)
    write_json(result, out)
    print(f"[metarl] wrote {out}", file=sys.stderr)
    if args.plot:
        plot(result, args.plot)
        print(f"[metarl] wrote {args.plot}", file=sys.stderr)
    return 0


def _evaluate_tasks(args: argparse.Namespace) -> int:
    """``metarl evaluate RUN --task KEY=VALUE ...``: adapt on each given task, the return after each step."""
    from metarl.config import parse_overrides
    from metarl.rl.watch import evaluate_tasks, format_tasks_table, plot_tasks

    unused = [flag for flag, value in (("--tasks", args.tasks), ("--shots", args.shots), ("--baseline", args.baseline),
                                       ("--baseline-lr", args.baseline_lr)) if value]
    if unused:
        raise ConfigError(f"{' and '.join(unused)}: not used with --task, which adapts on the tasks you give")
    result = evaluate_tasks(args.run, args.task, steps=args.steps, seed=args.seed, overrides=parse_overrides(args.set))
    print(format_tasks_table(result))
    return _write_result(args, result, "eval_tasks.json", plot_tasks)


def cmd_record(args: argparse.Namespace) -> int:
    from metarl.config import parse_overrides
    from metarl.rl.watch import check_video_path, format_task, load_rl_run, parse_task, record

    check_video_path(args.out)  # before loading anything
    run = load_rl_run(args.run, parse_overrides(args.set), what="metarl record")
    task = None
    if args.task is not None:
        from metarl.rl.build import make_env

        env = make_env(run.config)
        try:
            task = parse_task(env, args.task)
        finally:
            env.close()
    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    result = record(run, args.out, task=task, steps=args.steps, seed=args.seed, log=print)
    print(f"[metarl] task {format_task(result['task'])}: wrote {result['out']} ({result['frames']} frames)",
          file=sys.stderr)
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from metarl.config import shipped_configs

    configs = shipped_configs()
    width = max(map(len, configs), default=0)
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from metarl.config import config_path, format_config, load_config

    cfg = load_config(args.config, args.set)
    print(f"# {args.config}: resolved from {config_path(args.config)}; each comment is the key's help")
    print(format_config(cfg))
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    import metarl.envs as envs

    print(envs.format_envs_table())
    return 0


#: ``metarl bench WHAT`` -> the module whose ``main(argv)`` runs it.
BENCHMARKS: dict[str, str] = {
    "envs": "metarl.benchmarks.envs",
    "maml": "metarl.benchmarks.maml",
    "fewshot": "metarl.benchmarks.fewshot",
    "memory": "metarl.benchmarks.memory",
    "rl": "metarl.benchmarks.rl",
    "time-to-result": "metarl.benchmarks.time_to_result",
    "ray": "metarl.benchmarks.ray",
    "generic": "metarl.benchmarks.generic",
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    return int(importlib.import_module(BENCHMARKS[args.what]).main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metarl", description="Model-Agnostic Meta-Learning (Finn et al. 2017)",
                                epilog=f"An error prints one line and exits with code 2; {DEBUG_ENV}=1 shows its "
                                       "traceback instead.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train from a YAML config")
    t.add_argument("config", nargs="?", help="a shipped config by name (`metarl configs`) or a YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--logdir", help="run directory (default runs/<name>-<time>)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", choices=["cpu", "cuda"])
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    t.add_argument("--overwrite", action="store_true",
                   help="--logdir holds a run: delete it and start again (without this such a directory is refused)")
    t.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop with a checkpoint after this much training wall time (a budget; --resume continues)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="adapt on fresh held-out tasks; JSON (+ plot)")
    e.add_argument("runs", nargs="+", metavar="RUN_DIR|CHECKPOINT",
                   help="one run; or several runs (seeds) of one benchmark, evaluated on the same tasks and pooled: "
                        "IQM with a stratified-bootstrap 95%% CI, mean over runs and their range")
    e.add_argument("--tasks", type=int, help="held-out tasks (default: eval.test_tasks of the run)")
    e.add_argument("--task-set", metavar="finn2017|FILE.json",
                   help="RL: the held-out tasks, instead of --tasks drawn with --seed (which still seeds the "
                        "sampling): finn2017 (the 40 goals of Finn et al.'s test scripts, for HalfCheetahVel/Dir and "
                        "AntVel/Dir), or a JSON file: a list of tasks, or an earlier evaluation's JSON (its tasks)")
    e.add_argument("--steps", type=int, help="gradient steps (default: inner.test_steps of the run)")
    e.add_argument("--shots", type=int, help="K support examples (sinusoid)")
    e.add_argument("--seed", type=int, default=1, help="seed of the held-out tasks")
    e.add_argument("--out", help="JSON file (default RUN_DIR/eval.json); with several runs the pooled JSON, which "
                                 "holds each run's result too (no RUN_DIR/eval.json is written then)")
    e.add_argument("--plot", help="PNG file of the adaptation curves")
    e.add_argument("--figure", metavar="FILE.png",
                   help="the run's behaviour before and after adapting: sinusoid fits after 0, 1 and K steps; "
                        "Navigation2D paths and HalfCheetahVel/AntVel velocity against the target after each step "
                        "(on the --task tasks if given, else held-out ones drawn with --seed)")
    e.add_argument("--baseline", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a baseline run to evaluate the same way (e.g. pretrained=runs/...)")
    e.add_argument("--baseline-lr", action="append", default=[], metavar="NAME=LR",
                   help="RL: adapt this baseline (a --baseline name, or random) with inner lr LR instead of the "
                        "run's, e.g. pretrained=0.2 random=1.0 (the step sizes of Finn et al.'s Ant test script)")
    e.add_argument("--pretrain-iterations", type=int, default=10_000,
                   help="regression (sinusoid, custom with loss mse): train the pretrained baseline in-process "
                        "for N iterations when "
                        "--baseline pretrained=... is not given (0: skip)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluation-time config key, e.g. inner.lr=0.3 (the test-time step size), "
                        "test_lr_after_first=0.5 (the paper's test-time step sizes: lr, then lr / 2) or "
                        "dataset.root=PATH")
    e.add_argument("--task", action="append", default=[], metavar="KEY=VALUE",
                   help="RL: adapt on this task instead of held-out ones (e.g. goal=0.3,-0.2, velocity=1.7, "
                        "direction=-1; `metarl envs` lists the task spaces); repeat for several; writes "
                        "RUN_DIR/eval_tasks.json unless --out")
    e.add_argument("--metaworld-official", action="store_true",
                   help="Meta-World runs: metaworld.evaluation.metalearning_evaluation, unchanged, on Meta-World's "
                        "held-out goals (its defaults; the success rate papers report); JSON to --out (default "
                        "RUN_DIR/metaworld_eval.json); with several runs, each run's (kept when current) and the "
                        "pooled mean with a 95%% bootstrap CI to --out")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("record", help="RL: a video of the run adapting to a task (one episode before and after "
                                      "each step)")
    r.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    r.add_argument("--task", metavar="KEY=VALUE",
                   help="e.g. goal=0.3,-0.2 (default: a held-out task drawn with --seed)")
    r.add_argument("--out", required=True, help="FILE.gif, or FILE.mp4 (needs `pip install metarl[video]`)")
    r.add_argument("--steps", type=int, help="gradient steps (default: inner.test_steps of the run)")
    r.add_argument("--seed", type=int, default=1, help="seed of the adaptation's sampling and the episodes' resets")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluation-time config key, as for evaluate")
    r.set_defaults(func=cmd_record)

    b = sub.add_parser("bench", help="throughput benchmarks against the measured limit or a peer")
    b.add_argument("what", choices=list(BENCHMARKS))
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (--help)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("configs", help="list the shipped configs (`metarl train NAME`)")
    c.set_defaults(func=cmd_configs)

    s = sub.add_parser("config", help="inspect a config").add_subparsers(dest="action", required=True)
    show = s.add_parser("show", help="print a config resolved (base and defaults filled in), each key with its help")
    show.add_argument("config", metavar="NAME|FILE")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    show.set_defaults(func=cmd_config_show)

    v = sub.add_parser("envs", help="list the environments, their task spaces and horizons")
    v.set_defaults(func=cmd_envs)
    return p


#: Set to re-raise a user-facing error with its traceback instead of printing its one line.
DEBUG_ENV = "METARL_DEBUG"


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix (config, paths, data, checkpoints, a diverging run, an
    unreachable Ray): ``metarl`` prints them as one line and exits with code 2. Classes of modules not
    yet imported are left out (nothing can have raised them), so a sinusoid run never imports Ray."""
    from metarl.fewshot.download import ChecksumError, DatasetError, DownloadError
    from metarl.training import TrainingDiverged

    errors: list[type[BaseException]] = [ConfigError, CheckpointError, FileNotFoundError, DatasetError,
                                         DownloadError, ChecksumError, TrainingDiverged]
    ray_sampler = sys.modules.get("metarl.rl.ray_sampler")
    if ray_sampler is not None:
        errors.append(ray_sampler.RayClusterError)
    watch = sys.modules.get("metarl.rl.watch")
    if watch is not None:
        errors.append(watch.RecordError)
    return tuple(errors)


def error_line(e: BaseException) -> str:
    """``metarl: error: MESSAGE`` on one line, at most about 600 characters."""
    from metarl.fewshot.download import one_line

    return f"metarl: error: {one_line(str(e), limit=600)}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _threads()
    _allocator()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # a second Ctrl-C in training (the first one checkpoints), or one elsewhere
        print("metarl: stopped (Ctrl-C); a run keeps its last checkpoint: `metarl train --resume RUN_DIR` "
              "continues it", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `metarl configs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0") or not isinstance(e, user_errors()):
            raise
        print(error_line(e), file=sys.stderr)
        return 2
