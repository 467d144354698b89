"""The memory benchmark (BENCH_ONLY=memory, and part of the full run): `claimfab batch`'s
pipeline over 10,000, 100,000 and 1,000,000 devices (BENCH_MEMORY_SIZES) against an in-process
issuer (benches/batch_memory.rs: the tests' fake AWS IoT, forgetting each certificate once
issued), because the local endpoint serves about a hundred devices a second, too slow for a
million. Each size runs in its own process, which reports its own peak RSS (VmHWM) and CPU;
its batch directory is removed after (a million bundles are about 6 GB). Its row and note go
into BENCHMARKS.md."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import runs
from runs import OUT, REPO, commands, log, machine

ROW_PREFIX = "| memory:"
TARGET_DEVICES = 1_000_000
TARGET_MB = 100


def memory_benchmark() -> dict:
    sizes = [int(n) for n in os.environ.get("BENCH_MEMORY_SIZES", "10000,100000,1000000").split(",")]
    runs = []
    for devices in sizes:
        out = OUT / f"memory-{devices}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"memory: the batch pipeline over {devices} devices, in-process issuer")
        cmd = ["cargo", "bench", "--locked", "--quiet", "--bench", "batch_memory", "--",
               str(devices), str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)]
        commands.append(" ".join(cmd))
        done = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        shutil.rmtree(out, ignore_errors=True)
    return {"machine": machine(), "runs": runs, "commands": list(commands)}


def in_process_cpu(devices: int) -> dict:
    """CPU per device of the pipeline against the in-process issuer, its batch on the
    repository's disk and on tmpfs (/dev/shm: fsync costs nothing there): claimfab's work
    without the SDK, and the kernel's share of making it durable."""
    figures = {}
    for place, parent in (("disk", OUT), ("tmpfs", Path("/dev/shm"))):
        out = parent / f"claimfab-in-process-{devices}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["cargo", "bench", "--locked", "--quiet", "--bench", "batch_memory", "--", str(devices), str(out)]
        shown_out = out.relative_to(REPO) if out.is_relative_to(REPO) else out
        commands.append(" ".join(cmd[:-1] + [str(shown_out)]))
        done = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        shutil.rmtree(out, ignore_errors=True)
        figures[place] = json.loads(done.stdout.strip().splitlines()[-1])["cpu_ms_per_device"]
    return figures


def slope_bytes(runs: list[dict]) -> float:
    """Peak RSS added per device between the smallest and the largest run."""
    small, large = runs[0], runs[-1]
    return (large["peak_rss_kib"] - small["peak_rss_kib"]) * 1024 / max(large["devices"] - small["devices"], 1)


def row(memory: dict, measured: str = "") -> str:
    runs = memory["runs"]
    when = f" (measured {measured}, BENCH_ONLY)" if measured else ""
    figures = "; ".join(f"{r['devices']}: peak RSS {r['peak_rss_kib'] * 1024 / 1e6:.1f} MB,"
                        f" {r['seconds']:.0f} s, CPU {r['cpu_ms_per_device']:.2f} ms/device" for r in runs) + when
    return (f"{ROW_PREFIX} `batch --count N` pipeline (keys, journal, bundles, manifest, queue) against an"
            f" in-process issuer | {figures} | {slope_bytes(runs):.0f} bytes of peak RSS per added"
            f" device | <= {TARGET_MB} MB at {TARGET_DEVICES:,} devices |")


def bound(memory: dict) -> str:
    runs = memory["runs"]
    largest = runs[-1]
    return (
        "- **Memory.** A batch keeps no per-device record in memory but a few words: the"
        " replayed journal holds each device as a 32-byte slot (flags and references to"
        " pages) and its serial once in one string, and the bulky parts (certificate id, ARN,"
        " fingerprints, dates, bundle) are pages in an unlinked scratch file beside"
        " journal.jsonl (about 600 bytes of disk a device, gone when the run ends); a counted"
        " batch keeps its devices as the rule, a listed one in one string; keys are streamed"
        " (at most 512 ahead), bundles, the manifest and the hand-out queue written as they are"
        f" made. Peak RSS grows by {slope_bytes(runs):.0f} bytes per device between"
        f" {runs[0]['devices']:,} and {largest['devices']:,} devices ({largest['peak_rss_kib'] * 1024 / 1e6:.1f} MB"
        f" at {largest['devices']:,}): the slots, the serials and their hash table, the pipeline's"
        " to-do and ready positions (4 bytes each). The AWS stage is an in-process issuer here"
        " (the tests' fake AWS IoT, which forgets each certificate once issued and is not"
        " claimfab's memory but is counted in it): the local endpoint serves about a hundred"
        " devices a second, a million would take three hours; the AWS SDK keeps a connection"
        " pool and its clients, nothing per device.")


def patch_benchmarks_md(text: str, memory: dict, measured: str) -> str:
    """BENCHMARKS.md with the memory row and note of a BENCH_ONLY run in place."""
    return runs.patch_benchmarks_md(text, ROW_PREFIX, row(memory, measured), "- **Memory.**",
                                    bound(memory), memory.get("commands", []))


def run_memory() -> None:
    """BENCH_ONLY=memory: runs it, merges its figures into results.json and its row and note
    into BENCHMARKS.md."""
    runs.run_alone("memory", memory_benchmark, row, patch_benchmarks_md)
