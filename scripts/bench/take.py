"""The take benchmark: one hand-out at a flashing station, at batch scale (BENCH_ONLY=take runs it
alone).

A 100,000-device batch takes 17 minutes to make on the local endpoint, so the take benchmark
synthesizes one: a real batch of two devices, whose first bundle is hard-linked to every
serial, and a hand-out queue and index written in claimfab's format (src/core/floor_records/mod.rs).
That is enough: a take reads the queue record(s) from the cursor, stats a claim marker and
a bundle, and reads only the one bundle it hands out (whose content is the same device's in
every file here: the printed thing name is the seed's). It never lists bundles/ nor reads
the manifest on this path.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runs import (
    CLAIMFAB,
    OUT,
    TAKE_BUNDLES,
    TAKE_STATIONS,
    TAKES,
    FAST_LIMITS,
    Endpoint,
    commands,
    log,
    setup_account,
    station,
)

NAME_WIDTH = 128


def serial_hash(serial: str) -> int:
    """FNV-1a 64, as core::floor::serial_hash."""
    h = 0xcbf29ce484222325
    for byte in serial.encode():
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_floor_queue(batch: Path, serials: list[str]) -> None:
    """stations/queue (fixed-width records) and stations/queue.index (hash table), as
    floor::Floor::write_queue writes them."""
    stations = batch / "stations"
    stations.mkdir(parents=True, exist_ok=True)
    with open(stations / "queue", "w") as queue:
        for serial in serials:
            queue.write(f"{serial:<{NAME_WIDTH}} {'gg-' + serial:<{NAME_WIDTH}}\n")
    slots = 1
    while slots < 2 * len(serials):
        slots *= 2
    table = bytearray(4 * slots)
    for record, serial in enumerate(serials):
        slot = serial_hash(serial) % slots
        while table[4 * slot:4 * slot + 4] != b"\0\0\0\0":
            slot = (slot + 1) % slots
        table[4 * slot:4 * slot + 4] = (record + 1).to_bytes(4, "little")
    (stations / "queue.index").write_bytes(bytes(table))


def synthesize_batch(seed: Path, out: Path, count: int) -> None:
    shutil.rmtree(out, ignore_errors=True)
    (out / "bundles").mkdir(parents=True)
    shutil.copy(seed / "batch.json", out / "batch.json")
    shutil.copy(seed / "manifest.csv", out / "manifest.csv")
    serials = [f"SN{i:06d}" for i in range(1, count + 1)]
    # A file takes at most 65,000 links on ext4: a copy of the seed bundle per 50,000.
    copies = out.parent / f"{out.name}-seed-copies"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir()
    for n, serial in enumerate(serials):
        source = copies / f"{n // 50_000}.zip"
        if n % 50_000 == 0:
            shutil.copy(seed / "bundles" / "SN000001.zip", source)
        os.link(source, out / "bundles" / f"{serial}.zip")
    write_floor_queue(out, serials)


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


def take_benchmark(endpoint_options: list[str]) -> dict:
    """Mean, median and p99 ms per take at TAKE_BUNDLES bundles and at 1,000, taken in turn
    by TAKE_STATIONS stations at once; CPU per take; the machine's load meanwhile."""
    endpoint = Endpoint("endpoint-take", endpoint_options)
    fast = station("station-fast", FAST_LIMITS)
    setup_account(endpoint, fast)
    seed = OUT / "take-seed"
    shutil.rmtree(seed, ignore_errors=True)
    subprocess.run([CLAIMFAB, "batch", "--station", fast, "--out", seed, "--count", "2"],
                   env=endpoint.env, check=True, stdout=subprocess.DEVNULL)
    endpoint.stop()
    sizes = sorted({1000, TAKE_BUNDLES})
    batches = [OUT / f"take-{count}" for count in sizes]
    for count, batch in zip(sizes, batches):
        started = time.monotonic()
        synthesize_batch(seed, batch, count)
        log(f"take: batch of {count} bundles synthesized in {time.monotonic() - started:.1f} s")
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
                    f" stations at once, in turn with bench-out/take-1000; batches synthesized"
                    f" by scripts/bench/take.py (BENCH_ONLY=take)")
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
    " process, creating and syncing those files, per perf); the batch is synthesized (one real bundle hard-linked to every serial),"
    " which take cannot tell from a real one on this path.")
