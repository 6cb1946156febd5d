"""Following a child process's output from a test."""

from __future__ import annotations


class ProcessOutput:
    """The merged stdout/stderr of a child process, read line by line as it is written (a thread feeds it), so a
    test waits for the line it needs (an event), not for a sleep; every line also goes to `log` for the report."""

    def __init__(self, proc, log):
        import threading

        self.proc, self.lines = proc, []
        self._changed = threading.Condition()
        self._log = log
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of output
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return "".join(line for line in self.lines if line is not None)

    def wait_for(self, needle: str, timeout: float) -> None:
        """Until a line containing `needle` was printed; AssertionError if the process ended or `timeout` passed."""

        def printed() -> bool:
            return any(line is not None and needle in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(lambda: printed() or self.lines[-1:] == [None], timeout=timeout)
            if not printed():
                raise AssertionError(f"no line with {needle!r} (exit code {self.proc.poll()}):\n{self.text[-3000:]}")

    def close(self) -> str:
        self._reader.join(timeout=60)
        return self.text
