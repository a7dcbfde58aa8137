"""Threads, asyncio tasks and pool workers around ``shop.py``: a trace worth a timeline.

Nothing here knows about tracing. Run it from this folder:

    autotrace -p shop,timeline_example --exporter trace-file python timeline_example.py
    autotrace view autotrace-trace.json

(``scripts/screenshot_trace.py`` does this and takes the README's screenshot.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import shop


def restock(sku: str, count: int) -> int:
    time.sleep(0.004 * count)
    return count


def shopper(name: str) -> float:
    spent = 0.0
    for visit in range(3):
        spent += shop.checkout(f"{name}-{visit}", card_token="tok_123")
        restock("book", visit + 1)
    return spent


async def fetch_price(sku: str) -> float:
    await asyncio.sleep(0.01)
    return {"book": 12.5, "pen": 1.5}.get(sku, 0.0)


async def quote(owner: str) -> float:
    return sum([await fetch_price(sku) for sku in ("book", "pen")])


async def quotes() -> list[float]:
    return list(await asyncio.gather(*(quote(f"quote-{i}") for i in range(3))))


def audit(day: int) -> int:
    time.sleep(0.01)
    return day * 7


def main() -> None:
    threads = [threading.Thread(target=shopper, args=(f"shopper-{i}",), name=f"shopper-{i}")
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("quotes", asyncio.run(quotes()))
    with ProcessPoolExecutor(2) as pool:
        print("audits", list(pool.map(audit, range(4))))


if __name__ == "__main__":
    main()
