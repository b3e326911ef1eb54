"""``--busy K``: CPU-burner processes that load the machine while a benchmark is timed.

Each burner is a pure spin loop in its own process (``multiprocessing``'s
*spawn* start method: a fresh interpreter, no copy of this process's threads
or libraries).  A burner is bounded three ways, so that none outlives the
run: it stops when the pipe to its parent closes (the parent stopped it, or
died), after :data:`MAX_SECONDS` whatever happens, and :meth:`Burners.stop`
terminates one that has not gone within a second.
"""
import multiprocessing
import time

__all__ = ["Burners", "MAX_SECONDS"]

#: a burner stops by itself after this many seconds, even if nobody stops it
MAX_SECONDS = 6 * 3600.0


def _burn(conn, max_seconds):
    """Spin until the pipe to the parent closes (or says stop) or ``max_seconds`` pass."""
    deadline = time.monotonic() + max_seconds
    conn.send("ready")
    x = 0
    while time.monotonic() < deadline:
        for _ in range(20000):  # ~1 ms of pure integer work between checks
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        try:
            if conn.poll():  # a message, or EOF once the parent's end is closed
                break
        except (EOFError, OSError):
            break
    conn.close()


class Burners:
    """A context manager running ``k`` burner processes (none for ``k == 0``).

    ``pids`` lists their process ids while they run (and after, for checking
    that they are gone).
    """

    def __init__(self, k, max_seconds=MAX_SECONDS):
        self.k, self.max_seconds = int(k), float(max_seconds)
        self.procs, self.conns, self.pids = [], [], []

    def start(self):
        """Start the burners and wait until every one is spinning."""
        ctx = multiprocessing.get_context("spawn")
        try:
            for _ in range(self.k):
                mine, theirs = ctx.Pipe()
                p = ctx.Process(target=_burn, args=(theirs, self.max_seconds), daemon=True,
                                name="fastconv-bench-busy")
                p.start()
                theirs.close()
                self.procs.append(p)
                self.conns.append(mine)
                self.pids.append(p.pid)
            for c in self.conns:
                if not c.poll(60):
                    raise RuntimeError("a --busy burner process did not start within 60 s")
                c.recv()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every burner (close its pipe; terminate it if still there after 1 s)."""
        for c in self.conns:
            try:
                c.send("stop")
            except (OSError, EOFError, BrokenPipeError):
                pass
            c.close()
        for p in self.procs:
            p.join(1.0)
            if p.is_alive():
                p.terminate()
                p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()
        self.procs, self.conns = [], []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
