"""The take benchmark: one hand-out at a flashing station, at batch scale (BENCH_ONLY=take runs it
alone).

A 100,000-device batch takes 17 minutes to make on the local endpoint, so the take benchmark
makes its batches with claimfab's own pipeline against an in-process issuer
(benches/batch_memory.rs: the tests' fake AWS IoT): real batches, every bundle its own device's
(key, certificate, config), with their manifest, journal and hand-out queue, made in about a
minute and a half for 100,000 devices. A take is offline: it never sees the issuer.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runs import CLAIMFAB, OUT, REPO, TAKE_BUNDLES, TAKE_STATIONS, TAKES, commands, log


def make_batch(out: Path, count: int) -> None:
    """A real batch of `count` devices in `out`, made by the pipeline against the in-process
    issuer."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["cargo", "bench", "--locked", "--quiet", "--bench", "batch_memory", "--",
                    str(count), str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def take_loop(batches: list[Path], station_id: str, takes: int, into: Path) -> subprocess.Popen:
    """A station taking `takes` bundles one after another, from each batch in turn (so every
    batch size sees the same machine), each a claimfab process followed by its flashed
    record; prints per take the batch, its wall time and its CPU time (user + system), in s."""
    into.mkdir(parents=True, exist_ok=True)
    script = f"""
import resource, subprocess, sys, time
batches = {[str(b) for b in batches]!r}
def cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
for n in range({takes}):
    batch = batches[n % len(batches)]
    to = {str(into)!r} + f"/{{n}}"
    cpu_before, started = cpu(), time.perf_counter()
    taken = subprocess.run([{str(CLAIMFAB)!r}, "take", batch, "--station", {station_id!r}, "--to", to], capture_output=True, text=True)
    elapsed, cpu_used = time.perf_counter() - started, cpu() - cpu_before
    if taken.returncode != 0:
        sys.exit(f"take failed: {{taken.stderr}}")
    serial = taken.stdout.split()[0]
    subprocess.run([{str(CLAIMFAB)!r}, "flashed", batch, "--station", {station_id!r}, serial], check=True, capture_output=True)
    print(batch, elapsed, cpu_used, flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def take_figures(wall_ms: list[float], cpu_ms: list[float]) -> dict:
    wall_ms.sort()
    return {"takes": len(wall_ms), "mean_ms": sum(wall_ms) / len(wall_ms),
            "p50_ms": wall_ms[len(wall_ms) // 2],
            "p99_ms": wall_ms[min(len(wall_ms) - 1, int(0.99 * len(wall_ms)))],
            "max_ms": wall_ms[-1], "cpu_ms": sum(cpu_ms) / len(cpu_ms)}


def take_benchmark() -> dict:
    """Mean, median and p99 ms per take at TAKE_BUNDLES bundles and at 1,000, taken in turn
    by TAKE_STATIONS stations at once; CPU per take; the machine's load meanwhile."""
    sizes = sorted({1000, TAKE_BUNDLES})
    batches = [OUT / f"take-{count}" for count in sizes]
    for count, batch in zip(sizes, batches):
        started = time.monotonic()
        make_batch(batch, count)
        log(f"take: batch of {count} bundles made in {time.monotonic() - started:.1f} s")
    into = OUT / "take-images"
    shutil.rmtree(into, ignore_errors=True)
    loops = [take_loop(batches, f"bench-st{k}", TAKES // TAKE_STATIONS * len(sizes), into / f"st{k}")
             for k in range(1, TAKE_STATIONS + 1)]
    lines = [line.split() for loop in loops for line in loop.communicate()[0].splitlines()]
    if any(loop.returncode for loop in loops):
        raise SystemExit("bench: a take loop failed")
    results = {str(count): take_figures([1000 * float(l[1]) for l in lines if l[0] == str(batch)],
                                        [1000 * float(l[2]) for l in lines if l[0] == str(batch)])
               for count, batch in zip(sizes, batches)}
    results["load_average_1min"] = os.getloadavg()[0]
    shutil.rmtree(into, ignore_errors=True)
    commands.append(f"claimfab take bench-out/take-{TAKE_BUNDLES} --station bench-stK --to DIR/N"
                    f" (then claimfab flashed ... SERIAL), {TAKES} takes by {TAKE_STATIONS}"
                    f" stations at once, in turn with bench-out/take-1000; batches made by"
                    f" benches/batch_memory.rs (BENCH_ONLY=take)")
    return results


def take_row(take: dict) -> str:
    big, small = take[str(TAKE_BUNDLES)], take["1000"]
    return (f"| take: one bundle handed out at a {TAKE_BUNDLES}-bundle batch, {TAKES} takes by"
            f" {TAKE_STATIONS} stations at once (a process per take, extracting under --to) |"
            f" mean {big['mean_ms']:.1f} ms, median {big['p50_ms']:.1f} ms, p99 {big['p99_ms']:.1f} ms;"
            f" CPU {big['cpu_ms']:.1f} ms per take (load average {take['load_average_1min']:.1f}"
            f" on {os.cpu_count()} cores) | in turn at 1000 bundles: mean {small['mean_ms']:.1f} ms,"
            f" median {small['p50_ms']:.1f} ms, p99 {small['p99_ms']:.1f} ms; CPU"
            f" {small['cpu_ms']:.1f} ms | <= 50 ms, flat |")


TAKE_BOUND = (
    "- **Take.** A take costs the same at any batch size: one queue record read from the cursor"
    " (a hint every take moves on), a stat of the claim marker and of the bundle, the bundle"
    " (a few KiB) read and checked, and a handful of small synced writes (pending, marker,"
    " cursor, log line, the extracted files). The time is mostly the kernel's (starting the"
    " process, creating and syncing those files, per perf); the batches are real, made by"
    " claimfab's pipeline against an in-process issuer (benches/batch_memory.rs).")
