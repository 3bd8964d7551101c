"""A training job's log as people read it: plain text, without terminal control sequences.

The training child writes to a file what it would write to a terminal: colours, and progress bars
that redraw one line hundreds of times an epoch with a carriage return and an erase-line sequence.
"""

import codecs
import os
import re
from datetime import timezone as dt_timezone

from django.utils import timezone

from reservations.models import Reservation

from .models import TrainingJob

# ECMA-48: CSI (colours, erase line, cursor moves), OSC (window titles, hyperlinks) ended by BEL or
# ST, and the other two-character escapes; also the 8-bit CSI. An unfinished sequence at the very end
# is a write still under way.
ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*)?\Z"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# Left after the escapes and carriage returns are gone: no other control character means anything
# in a text answer.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A progress bar's whole epoch is tens of kilobytes of redraws that collapse into one line, so the
# raw tail read to fill `size` bytes of text grows by this factor each time, up to MAX_RAW_BYTES.
RAW_GROWTH = 8
MAX_RAW_BYTES = 16 << 20
PROBE_BYTES = 4096


def clean_log(text):
    """Terminal output as plain text: escape sequences stripped, and each line's carriage-return
    redraws collapsed to the last one drawn (a bar's final state)."""
    lines = []
    for line in ESCAPE.sub("", text).split("\n"):
        # A redraw ends with "\r" before the next one, and some tools end a bar with "\r\n": the last
        # segment with text in it is what a terminal would show.
        drawn = [segment for segment in line.split("\r") if segment.strip()]
        lines.append(CONTROL.sub("", drawn[-1]).rstrip() if drawn else "")
    return "\n".join(lines)


def log_tail(path, size):
    """The end of the log at `path` as clean text of at most `size` UTF-8 bytes, in whole lines
    (a single line longer than that is cut at its start), each ending with a newline. Empty when
    there is no such file or nothing but white space in it."""
    if not path:
        return ""
    try:
        with open(path, "rb") as log:
            length = log.seek(0, os.SEEK_END)
            wanted = size
            while True:
                start = max(length - wanted, 0)
                log.seek(start)
                raw = log.read(length - start)
                if start:
                    # Mid-line, perhaps mid-sequence or mid-character: begin at the next full line.
                    raw = raw[raw.find(b"\n") + 1:] if b"\n" in raw else b""
                # final=False: a character the writer is still in the middle of is left out.
                text = clean_log(codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=False))
                if not start or len(text.encode()) >= size or wanted >= MAX_RAW_BYTES:
                    break
                wanted = min(wanted * RAW_GROWTH, MAX_RAW_BYTES)
    except FileNotFoundError:
        return ""
    # Every line ends with a newline, the one still being drawn too, within the `size` bytes.
    text = _last_bytes(text.rstrip("\n"), size - 1)
    return text + "\n" if text.strip() else ""


def _last_bytes(text, size):
    encoded = text.encode()
    if len(encoded) <= size:
        return text
    if size <= 0:
        return ""
    cut = encoded[-size:]
    newline = cut.find(b"\n")
    if newline != -1:
        cut = cut[newline + 1:]
    # errors="ignore" drops a character the cut split in two.
    return cut.decode("utf-8", errors="ignore")


def _utc(moment):
    return moment.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _nothing_logged(job, now):
    """One line on why job `job` has no log yet, and when it will."""
    booking = job.reservation
    if job.status in TrainingJob.LIVE:
        return f"Job {job.pk} is {job.status}: its training has not written to the log yet."
    if job.status in TrainingJob.FINISHED:
        why = f" {job.reason}" if job.reason else ""
        return f"Job {job.pk} ended ({job.status}) before its training wrote a log.{why}"
    if booking.status == Reservation.Status.WAITLISTED:
        return (
            f"Job {job.pk} has not started yet: its booking is on the waitlist for {_utc(booking.start)}; "
            f"it starts when the booking is confirmed and begins."
        )
    if booking.start > now:
        return f"Job {job.pk} has not started yet: it starts when its booking begins at {_utc(booking.start)}."
    return (
        f"Job {job.pk} has not started yet: its booking began at {_utc(booking.start)}; "
        f"it starts as soon as its node's worker picks it up."
    )


def job_log_text(job, size, *, now=None):
    """What GET /api/v1/jobs/{id}/log/ answers (as text/plain; charset=utf-8): the clean tail of
    job `job`'s training log (at most `size` bytes), or one line saying why there is none yet."""
    text = log_tail(job.log_path, size)
    # Empty also when `size` is too small for the last line: then say nothing rather than "not started".
    if text or log_tail(job.log_path, PROBE_BYTES):
        return text
    return _nothing_logged(job, now or timezone.now()) + "\n"
