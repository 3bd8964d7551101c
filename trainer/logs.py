import os


def log_tail(path, size):
    """The last `size` bytes of a job's log as text (empty before the job has written any)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(log.tell() - size, 0))
            return log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
