# SPDX-License-Identifier: MIT
"""Awaiting jobs from asyncio: the client's completion eventfd on the event loop.

No thread per job and no polling loop: while any job is awaited, the loop watches the
eventfd, which the daemon signals once the client has armed it (moed_arm_wakeup: it
sets the waiting flag and rechecks the completion ring, so no completion is missed
between the check and the sleep). One event loop per client; do not mix Client.wait()
and these on one client.
"""
import asyncio
import errno
import os

from ._lib import lib
from .client import MoedError


class _Watcher:
    def __init__(self, client, loop):
        self.client, self.loop = client, loop
        self.fd = lib.moed_completion_fd(client._h)
        self.reading = False

    def ensure(self):
        if not self.reading:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True
        self._arm()

    def detach(self):
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        self._fail(MoedError(errno.ECANCELED, "moed: the client was closed with jobs awaited"))

    def _fail(self, exc):
        waiters, self.client._waiters = self.client._waiters, {}
        space, self.client._space = self.client._space, []
        for future in list(waiters.values()) + space:
            if not future.done():
                future.set_exception(exc)

    def _arm(self):
        # Reap until the ring is empty with the wake-up armed, or nobody waits.
        while self.client._waiters or self.client._space:
            rc = lib.moed_arm_wakeup(self.client._h)
            if rc == 0:
                return
            try:
                if rc < 0:
                    raise MoedError(-rc, f"moed: arming the completion eventfd: {os.strerror(-rc)}")
                self.client.poll()
            except MoedError as e:
                self._fail(e)
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _readable(self):
        try:
            os.read(self.fd, 8)  # non-blocking: the count does not matter
        except BlockingIOError:
            pass
        try:
            self.client.poll()
        except MoedError as e:
            self._fail(e)
        self._arm()


def _watcher(client):
    loop = asyncio.get_running_loop()
    if client._async is None or client._async.loop is not loop:
        client._async = _Watcher(client, loop)
    return client._async


async def completion(client, ticket):
    """Await job `ticket` of `client`: (status, message, output shape)."""
    if ticket in client._done:
        return client._done.pop(ticket)
    watcher = _watcher(client)
    future = watcher.loop.create_future()
    client._waiters[ticket] = future
    watcher.ensure()
    return await future


async def submit(client, job, keep=None):
    """Client.submit, awaiting room in the submission ring where it is full (the daemon
    takes jobs as fast as it can; room comes back with completions)."""
    while True:
        try:
            return client.submit(job, keep)
        except MoedError as e:
            if e.code != errno.EAGAIN:
                raise
        watcher = _watcher(client)
        future = watcher.loop.create_future()
        client._space.append(future)
        watcher.ensure()
        await future
