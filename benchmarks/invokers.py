"""How fast the process invoker runs, and what the Runtime API costs over calling in-process.

Three figures, each on a no-op Python handler (``tests.runtime_handlers.noop``)::

    1. throughput: a warm pool of 2 processes (concurrency 2, warm 2) serving
       n invocations, 4 callers keeping it busy      → invocations/s
    2. overhead: one invocation at a time, p50 latency through the pool minus
       p50 latency of the in-process python invoker  → ms
    3. cold start: a new process of the packaged bootstrap, from spawn to its
       first ``/invocation/next``, over k pools       → p50 ms

Run from the repository root::

    python -m benchmarks.invokers [-n 20000] [--cold 30] [--json]

Calls go straight to the invokers (no queue or store): this measures the
execution backend, ``benchmarks/throughput.py`` the pipeline around it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.config.models import FunctionConfig
from broker.functions.invoker import Invoker, InvokeRequest
from broker.models import Success
from invokers.process import ProcessInvoker
from invokers.python import PythonInvoker

HANDLER = "tests.runtime_handlers.noop"
TARGETS = {"throughput": 2000.0, "overhead_ms": 1.0, "cold_start_ms": 150.0}


def request(n: int) -> InvokeRequest:
    return InvokeRequest(
        request_id=f"bench-{n}",
        invocation_id=f"bench-{n}",
        function="noop",
        function_arn="arn:aws:lambda:local:000000000000:function:noop",
        payload=b"{}",
        deadline=datetime.now(UTC) + timedelta(seconds=30),
        attempt=1,
    )


def process_config(**kw: Any) -> FunctionConfig:
    return FunctionConfig.model_validate({"invoker": "process", "handler": HANDLER, **kw})


async def throughput(n: int) -> float:
    invoker = ProcessInvoker("noop", process_config(concurrency=2, warm=2))
    await invoker.start()
    try:
        await _run_all(invoker, 500, callers=4)  # warm-up
        started = time.perf_counter()
        await _run_all(invoker, n, callers=4)
        return n / (time.perf_counter() - started)
    finally:
        await invoker.close()


async def _run_all(invoker: Invoker, n: int, callers: int) -> None:
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            outcome = await invoker.invoke(request(i))
            if not isinstance(outcome, Success):
                raise RuntimeError(f"invocation failed: {outcome}")

    await asyncio.gather(*(caller() for _ in range(callers)))


async def latency_p50_ms(invoker: Invoker, n: int) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        outcome = await invoker.invoke(request(i))
        samples.append((time.perf_counter() - started) * 1000)
        if not isinstance(outcome, Success):
            raise RuntimeError(f"invocation failed: {outcome}")
    return statistics.median(samples[n // 10 :])  # without the warm-up tenth


async def overhead(n: int) -> tuple[float, float]:
    pooled = ProcessInvoker("noop", process_config(concurrency=1, warm=1))
    in_process = PythonInvoker(
        "noop", FunctionConfig.model_validate({"handler": HANDLER.replace(".noop", ":noop")})
    )
    await pooled.start()
    await in_process.start()
    try:
        return await latency_p50_ms(pooled, n), await latency_p50_ms(in_process, n)
    finally:
        await pooled.close()
        await in_process.close()


async def cold_starts(k: int) -> list[float]:
    found = []
    for _ in range(k):
        invoker = ProcessInvoker("noop", process_config(concurrency=1, warm=1))
        await invoker.start()
        p50 = invoker.pool_stats().cold_start_p50_ms
        await invoker.close()
        if p50 is None:
            raise RuntimeError("the warm process did not start")
        found.append(p50)
    return found


async def main(n: int, cold: int) -> dict[str, float]:
    per_s = await throughput(n)
    pooled_ms, in_process_ms = await overhead(min(n, 5000))
    starts = sorted(await cold_starts(cold))
    return {
        "throughput": per_s,
        "pooled_p50_ms": pooled_ms,
        "in_process_p50_ms": in_process_ms,
        "overhead_ms": pooled_ms - in_process_ms,
        "cold_start_ms": statistics.median(starts),
        "cold_start_p99_ms": starts[min(len(starts) - 1, int(len(starts) * 0.99))],
    }


def table(figures: dict[str, float], n: int, cold: int) -> str:
    rows = [
        (
            f"warm pool of 2, no-op, n = {n:,}",
            f"{figures['throughput']:,.0f} inv/s",
            f"≥ {TARGETS['throughput']:,.0f}/s",
            figures["throughput"] >= TARGETS["throughput"],
        ),
        (
            "Runtime API overhead, p50 (one at a time)",
            f"{figures['overhead_ms']:.3f} ms "
            f"({figures['pooled_p50_ms']:.3f} vs {figures['in_process_p50_ms']:.3f})",
            f"≤ {TARGETS['overhead_ms']:g} ms",
            figures["overhead_ms"] <= TARGETS["overhead_ms"],
        ),
        (
            f"bootstrap cold start p50 (k = {cold})",
            f"{figures['cold_start_ms']:.1f} ms (p99 {figures['cold_start_p99_ms']:.1f})",
            f"≤ {TARGETS['cold_start_ms']:g} ms",
            figures["cold_start_ms"] <= TARGETS["cold_start_ms"],
        ),
    ]
    width = [max(len(str(row[i])) for row in rows) for i in range(3)]
    lines = [f"{'figure':<{width[0]}}  {'measured':<{width[1]}}  {'target':<{width[2]}}  met"]
    for name, measured, target, met in rows:
        lines.append(
            f"{name:<{width[0]}}  {measured:<{width[1]}}  {target:<{width[2]}}  "
            f"{'yes' if met else 'NO'}"
        )
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=20_000, help="invocations for the throughput")
    parser.add_argument("--cold", type=int, default=30, help="cold starts to measure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = asyncio.run(main(args.n, args.cold))
    print(json.dumps(figures) if args.json else table(figures, args.n, args.cold))


if __name__ == "__main__":
    cli()
