"""A process that competes for a lock (run by path from the leadership tests).

``python fleet_leader_probe.py DATABASE_URL NAME``: prints ``leading <pid>`` when this
process becomes the leader and ``stopped <pid>`` when its job ends; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from chargetwin.leadership import Leadership, lock_for


async def main(url: str, name: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def job(job_stop: asyncio.Event) -> None:
        print(f"leading {os.getpid()}", flush=True)
        await job_stop.wait()
        print(f"stopped {os.getpid()}", flush=True)

    await Leadership(lock_for(url, name), name, poll=0.2).run(job, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
