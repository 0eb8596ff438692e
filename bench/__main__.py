"""``python -m bench all|fanout|ramp|persist|idle|login [--quick] [--json out.json]``,
or ``python -m bench scale [--sizes 10k,300k,3M] [--targets sqlite,postgres] [--quick]
[--ops resume,resume_16]``.

Starts every server itself (pinned to core 0 with ``taskset`` when there are two
cores; this process, the load generator, pins itself to core 1), runs the
scenarios, prints one table and writes the same figures as JSON.
Installs nothing: a missing optional package (python-socketio for the peer,
uvloop) is reported and that part is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import aiohttp

from bench import scale
from bench import scenarios as sc
from bench.targets import (
    REPO,
    OurTarget,
    create_pg_db,
    drop_pg_db,
    make_target,
    our_server_uses_uvloop,
    pin_self_to_generator_core,
)

SCENARIOS = ("fanout", "ramp", "persist", "idle", "login")
TARGETS = ("ceiling", "peer", "sqlite", "postgres")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def our_server_usable(workdir: Path) -> str | None:
    """None if run.py starts and /api/v1/ws answers an authenticated upgrade."""
    if not (REPO / "run.py").exists():
        return "run.py does not exist"
    t = make_target("sqlite", workdir, uvloop=False)
    try:
        await t.start()
        assert isinstance(t, OurTarget)
        async with aiohttp.ClientSession() as s:
            _, token = await t.signup(s)
        c = await t.open_client(0, 0, (token, 0), sc.Sink())
        c.conn.close()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}".strip()[:2000]
    finally:
        await t.stop()


async def run_target(
    name: str,
    wanted: list[str],
    p: sc.Params,
    workdir: Path,
    uvloop: bool,
    results: dict[str, Any],
    quick: bool,
) -> None:
    res = results.setdefault(name, {})

    async def guarded(label: str, coro_fn: Any) -> None:
        log(f"{name}: {label}")
        try:
            res[label] = await coro_fn()
        except Exception as e:
            res[label] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name}: {label} FAILED: {e}\n{traceback.format_exc()}")

    ours = name in ("sqlite", "postgres")
    if {"fanout", "ramp", "persist"} & set(wanted):
        t = make_target(name, workdir, uvloop)
        try:
            await t.start()
            if {"fanout", "ramp"} & set(wanted):
                rig = sc.FanoutRig(t, p)
                try:
                    await rig.setup()
                    if "fanout" in wanted:
                        await guarded("fanout", lambda: sc.fanout(rig))
                    if "ramp" in wanted:
                        await guarded("ramp", lambda: sc.ramp(rig))
                finally:
                    rig.close()
                await sc.wait_server_quiet(t, max_wait=p.quiet_wait, machine=False)
            if "persist" in wanted and ours:
                assert isinstance(t, OurTarget)
                await guarded("persist", lambda: sc.persist(t, p))
        except Exception as e:
            res.setdefault("fanout", {"error": f"{type(e).__name__}: {e}"})
            log(f"{name}: setup FAILED: {e}\n{t.log_tail()}")
        finally:
            await t.stop()
    if "idle" in wanted:
        t = make_target(name, workdir, uvloop)
        try:
            await t.start()
            await guarded("idle", lambda: sc.idle(t, p, p.idle_conns))
        except Exception as e:
            res["idle"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name}: idle FAILED: {e}\n{t.log_tail()}")
        finally:
            await t.stop()
    if "login" in wanted and ours and not (quick and name == "postgres"):
        t = make_target(name, workdir, uvloop, bcrypt_rounds=12)
        try:
            await t.start()
            assert isinstance(t, OurTarget)
            await guarded("login", lambda: sc.login_storm(t, p))
        except Exception as e:
            res["login"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name}: login FAILED: {e}\n{t.log_tail()}")
        finally:
            await t.stop()


async def run_raw_pg(p: sc.Params, results: dict[str, Any]) -> None:
    name = f"chat_bench_raw_{os.getpid()}"
    log("raw asyncpg single-row INSERT ... RETURNING")
    try:
        dsn = await create_pg_db(name)
        results["raw_asyncpg"] = await sc.raw_asyncpg_inserts(dsn, p)
    except Exception as e:
        results["raw_asyncpg"] = {"error": f"{type(e).__name__}: {e}"}
    finally:
        with contextlib.suppress(Exception):
            await drop_pg_db(name)


# --- report --------------------------------------------------------------------
def _get(results: dict[str, Any], target: str, scenario: str, key: str) -> Any:
    v = results.get(target, {}).get(scenario, {})
    return v.get(key) if isinstance(v, dict) else None


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != v:  # NaN
            return "—"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


ROWS = [
    ("fan-out: server CPU µs / delivery", "fanout", "server_us_per_delivery"),
    ("fan-out: generator CPU µs / frame", "fanout", "gen_us_per_frame"),
    ("fan-out: p50 latency ms", "fanout", "p50_ms"),
    ("fan-out: p99 latency ms", "fanout", "p99_ms"),
    ("fan-out: loss %", "fanout", "loss_pct"),
    ("ramp: highest passing deliveries/s", "ramp", "highest_passing_delivered_per_s"),
    ("persist: acked sends/s (16 senders)", "persist", "acked_per_s"),
    ("persist: ack p99 ms", "persist", "ack_p99_ms"),
    ("idle: server RSS KiB / connection", "idle", "rss_kib_per_conn"),
    ("login storm: ping p99 − baseline ms", "login", "loop_lag_p99_ms"),
]


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, as ratios within this run."""
    out = []

    def ratio(a: Any, b: Any) -> float | None:
        return (
            round(a / b, 3)
            if isinstance(a, int | float) and isinstance(b, int | float) and b
            else None
        )

    ceil_cpu = _get(results, "ceiling", "fanout", "server_us_per_delivery")
    ceil_ramp = _get(results, "ceiling", "ramp", "highest_passing_delivered_per_s")
    ceil_rss = _get(results, "ceiling", "idle", "rss_kib_per_conn")
    raw = results.get("raw_asyncpg", {}).get("inserts_per_s")
    for t in ("peer", "sqlite", "postgres"):
        if t not in results:
            continue
        # SQLite, one process doing what PostgreSQL's server processes do too: half.
        persist_goal = 0.5 if t == "sqlite" else 1.0
        specs = [
            (
                "fan-out CPU/delivery ≤ 2.0× ceiling",
                ratio(_get(results, t, "fanout", "server_us_per_delivery"), ceil_cpu),
                "≤",
                2.0,
                "×",
            ),
            (
                "fan-out p99 at 250 msg/s ≤ 15 ms",
                _get(results, t, "fanout", "p99_ms"),
                "≤",
                15.0,
                " ms",
            ),
            ("fan-out loss = 0", _get(results, t, "fanout", "loss"), "≤", 0.0, ""),
            (
                "ramp highest passing ≥ 0.5× ceiling",
                ratio(_get(results, t, "ramp", "highest_passing_delivered_per_s"), ceil_ramp),
                "≥",
                0.5,
                "×",
            ),
            (
                f"persisted acked/s ≥ {persist_goal}× raw asyncpg",
                ratio(_get(results, t, "persist", "acked_per_s"), raw),
                "≥",
                persist_goal,
                "×",
            ),
            (
                "idle RSS/conn ≤ 1.3× ceiling",
                ratio(_get(results, t, "idle", "rss_kib_per_conn"), ceil_rss),
                "≤",
                1.3,
                "×",
            ),
            (
                "login storm loop lag p99 ≤ 20 ms",
                _get(results, t, "login", "loop_lag_p99_ms"),
                "≤",
                20.0,
                " ms",
            ),
        ]
        for label, value, op, limit, unit in specs:
            if value is None:
                continue
            ok = value <= limit if op == "≤" else value >= limit
            out.append(
                {"target": t, "check": label, "value": value, "unit": unit.strip(), "pass": ok}
            )
    return out


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    cols = [t for t in TARGETS if t in results]
    lines = []
    head = ["metric", *cols]
    table = [head]
    for label, scen, key in ROWS:
        row = [label] + [_fmt(_get(results, t, scen, key)) for t in cols]
        if any(c != "—" for c in row[1:]):
            table.append(row)
    raw = results.get("raw_asyncpg", {})
    if "inserts_per_s" in raw:
        # the reference both of our columns are compared with
        ref = _fmt(raw["inserts_per_s"])
        table.append(
            ["persist: raw asyncpg INSERT…RETURNING/s"]
            + [ref if t in ("sqlite", "postgres") else "—" for t in cols]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        lines.append(
            "  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r))
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    cks = checks(results)
    if cks:
        lines.append("")
        lines.append("targets (ratios within this run):")
        for c in cks:
            v = f"{c['value']:.3g}{c['unit'] if c['unit'] != '×' else '×'}"
            lines.append(
                f"  {c['target']:<9} {c['check']:<42} {v:>10}  {'PASS' if c['pass'] else 'FAIL'}"
            )
    notes = []
    for t in cols:
        ramp = results[t].get("ramp", {})
        if ramp.get("generator_bound"):
            notes.append(
                f"  {t}: a ramp step had the generator's core > 90 % busy and the server's "
                "not full: its ramp figure may be a lower bound"
            )
        for scen in ("fanout", "persist", "login"):
            fc = _get(results, t, scen, "foreign_cores")
            if isinstance(fc, int | float) and fc > 0.25:
                notes.append(
                    f"  {t}/{scen}: {fc:.2f} cores busy with other programs during the "
                    "measurement: latency figures are unreliable"
                )
    fc = results.get("raw_asyncpg", {}).get("foreign_cores")
    if isinstance(fc, int | float) and fc > 0.25:
        notes.append(f"  raw asyncpg: {fc:.2f} cores busy with other programs during it")
    if notes:
        lines += ["", "notes:", *notes]
    errs = [
        f"  {t}/{s}: {v['error']}"
        for t, d in results.items()
        if isinstance(d, dict)
        for s, v in d.items()
        if isinstance(v, dict) and "error" in v
    ]
    if errs:
        lines += ["", "errors:", *errs]
    lines.append("")
    lines.append(
        f"pinned={meta['pinned']} baselines_uvloop={meta['baselines_uvloop']} "
        f"quick={meta['quick']} python={meta['python']} aiohttp={meta['aiohttp']} "
        f"python-socketio={meta.get('python_socketio')} server@{meta.get('git_rev')}"
    )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    p = sc.QUICK if args.quick else sc.FULL
    wanted = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    pinned = pin_self_to_generator_core()
    nofile = raise_nofile(p.idle_conns * 2 + 1000)
    if nofile < p.idle_conns + 500:
        p = sc.Params(**{**p.__dict__, "idle_conns": max(100, nofile - 500)})
        log(f"ulimit -n is {nofile}: idle scenario reduced to {p.idle_conns} connections")
    if args.idle_conns:
        p = sc.Params(**{**p.__dict__, "idle_conns": args.idle_conns})

    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if args.uvloop == "auto":
        base_uvloop = have_uvloop and our_server_uses_uvloop()
    else:
        base_uvloop = args.uvloop == "on"
    if base_uvloop and not have_uvloop:
        raise SystemExit("--uvloop on but uvloop is not installed (pip install -e '.[bench]')")
    if "peer" in targets and importlib.util.find_spec("socketio") is None:
        log("python-socketio is not installed: skipping the peer (pip install -e '.[bench]')")
        targets.remove("peer")

    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    ours = [t for t in targets if t in ("sqlite", "postgres")]
    if ours:
        why = await our_server_usable(workdir)
        if why:
            log(f"our server is not usable, skipping {ours}: {why}")
            for t in ours:
                targets.remove(t)
                skipped[t] = why
    import aiohttp as _aiohttp

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenarios": wanted,
        "targets": targets,
        "quick": args.quick,
        "params": p.__dict__,
        "pinned": pinned,
        "server_core": 0 if pinned else None,
        "generator_core": 1 if pinned else None,
        "generator_loop": "uvloop" if have_uvloop else "asyncio",
        "baselines_uvloop": base_uvloop,
        "our_server_uses_uvloop": our_server_uses_uvloop(),
        "python": platform.python_version(),
        "aiohttp": _aiohttp.__version__,
        "cpu": _cpu_model(),
        "git_rev": _git_rev(),
        "skipped": skipped,
    }
    with contextlib.suppress(ImportError):
        import socketio

        meta["python_socketio"] = getattr(socketio, "__version__", None) or _dist_version(
            "python-socketio"
        )
    t_start = time.monotonic()
    try:
        for t in targets:
            await run_target(t, wanted, p, workdir, base_uvloop, results, args.quick)
        if "persist" in wanted and ours:
            await run_raw_pg(p, results)
    finally:
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        with contextlib.suppress(Exception):
            import shutil

            shutil.rmtree(workdir)
    return {"meta": meta, "results": results, "checks": checks(results)}


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _git_rev() -> str | None:
    """HEAD, with "-dirty" when the server's files differ from it (others may be
    editing the tree while the benchmark runs)."""
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "run.py", "chat_server", "sql"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    return None


async def scale_main(args: argparse.Namespace) -> dict[str, Any]:
    """``scale`` (bench/scale.py): data-size dependence, on our server only."""
    p = scale.QUICK if args.quick else scale.ScaleParams()
    if args.sizes:
        p = scale.ScaleParams(**{**p.__dict__, "sizes": scale.parse_sizes(args.sizes)})
    if args.ops:
        p = scale.ScaleParams(**{**p.__dict__, "ops": scale.parse_ops(args.ops)})
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    targets = [t for t in targets if t in ("sqlite", "postgres")] or ["sqlite", "postgres"]
    pinned = pin_self_to_generator_core()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-scale-"))
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenarios": ["scale"],
        "targets": targets,
        "quick": args.quick,
        "params": p.__dict__,
        "samples": scale.samples_note(p),
        "pinned": pinned,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "git_rev": _git_rev(),
    }
    t_start = time.monotonic()
    try:
        results = await scale.run(targets, p, workdir, log)
    finally:
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        with contextlib.suppress(Exception):
            import shutil

            shutil.rmtree(workdir)
    return {"meta": meta, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    ap.add_argument("scenario", nargs="?", default="all", choices=("all", *SCENARIOS, "scale"))
    ap.add_argument("--quick", action="store_true", help="short runs (~2 minutes in all)")
    ap.add_argument(
        "--json",
        default=str(Path(__file__).parent / "results.json"),
        help="where to write the JSON",
    )
    ap.add_argument(
        "--targets", default=",".join(TARGETS), help="comma list of: " + ", ".join(TARGETS)
    )
    ap.add_argument(
        "--uvloop",
        choices=("auto", "on", "off"),
        default="auto",
        help="baselines on uvloop: auto = when our server uses it",
    )
    ap.add_argument(
        "--idle-conns", type=int, default=0, help="override the idle scenario's connection count"
    )
    ap.add_argument(
        "--sizes",
        default="",
        help="scale: message counts, e.g. 10k,300k,3M (the default; --quick: 2k,20k)",
    )
    ap.add_argument(
        "--ops",
        default="",
        help="scale: only these operations, e.g. resume,resume_16 (default: all)",
    )
    args = ap.parse_args()
    if args.scenario == "scale":
        if args.json == ap.get_default("json"):
            args.json = str(Path(__file__).parent / "results-scale.json")
        report = asyncio.run(scale_main(args))
        sizes = [scale.size_label(n) for n in report["meta"]["params"]["sizes"]]
        print(scale.render(report["results"], sizes))
        print(
            f"\npinned={report['meta']['pinned']} {report['meta']['samples']}"
            f" python={report['meta']['python']} server@{report['meta']['git_rev']}"
        )
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"JSON written to {args.json} ({report['meta']['elapsed_s']} s)")
        return
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        report = uvloop.run(amain(args))
    else:
        report = asyncio.run(amain(args))
    print(render(report["results"], report["meta"]))
    out = Path(args.json)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"JSON written to {out} ({report['meta']['elapsed_s']} s)")


if __name__ == "__main__":
    main()
