"""A job's log as the API serves it: clean text, and one clear line when there is nothing yet.

data/train-epoch-1.raw is an excerpt of a real train.log (README's demo job on CPU): the dataset
scan, then epoch 1 with its training and validation progress bars, as ultralytics wrote them (colours,
and "\\r ESC[K" redraws). Only the two absolute paths in it were shortened.
"""

from datetime import timedelta
from pathlib import Path

import pytest

from reservations import services
from trainer.logs import clean_log, job_log_text, log_tail
from trainer.models import TrainingJob
from trainer.spec import JobSpecSerializer

from ..support import NEXT_SLOT, book, make_user

RAW = Path(__file__).parent / "data" / "train-epoch-1.raw"
EPOCH_BAR = "       1/10         0G      1.731      1.003     0.8256          7         64: 100% ━━━━━━━━━━━━ 300/300 28.5it/s 10.5s"
VALIDATION = "                   all        400        784      0.015     0.0241   0.000892   0.000147"


def write_log(tmp_path, data):
    path = tmp_path / "train.log"
    path.write_bytes(data)
    return str(path)


def test_it_strips_every_escape_sequence_from_a_real_training_log():
    text = log_tail(str(RAW), 1 << 20)
    assert "\x1b" not in text and "\r" not in text and "[K" not in text and "[0m" not in text
    assert text.splitlines()[0] == (
        "train: Fast image access ✅ (ping: 0.0±0.0 ms, read: 772.0±293.2 MB/s, size: 10.0 KB)"
    )
    assert "Logging results to /srv/scheduler/var/runs/job-1/train" in text.splitlines()


def test_each_progress_bar_of_a_real_training_log_keeps_only_its_final_state():
    lines = log_tail(str(RAW), 1 << 20).splitlines()
    assert [line for line in lines if "/300" in line] == [EPOCH_BAR]
    assert [line for line in lines if "/50 " in line] == [
        "                 Class     Images  Instances      Box(P          R      mAP50  mAP50-95): 100% "
        "━━━━━━━━━━━━ 50/50 40.6it/s 1.2s"
    ]
    assert lines[-1] == VALIDATION


def test_a_bar_still_being_drawn_shows_its_latest_state(tmp_path):
    raw = RAW.read_bytes()
    # Cut inside the "ESC[K" of the next redraw after 149/300: the write is still under way.
    redraw = raw.index(b"149/300")
    cut = raw.index(b"\r\x1b[K", redraw) + 2
    text = log_tail(write_log(tmp_path, raw[:cut]), 65536)
    assert text.splitlines()[-1].startswith("       1/10 ") and "149/300" in text.splitlines()[-1]
    assert "\x1b" not in text and "[" not in text.splitlines()[-1]


def test_a_character_cut_in_half_by_a_write_under_way_is_left_out(tmp_path):
    raw = RAW.read_bytes()
    bar = raw.index("━".encode(), raw.index(b"149/300") - 60)
    text = log_tail(write_log(tmp_path, raw[: bar + 1]), 65536)  # one byte of a three-byte character
    assert "\ufffd" not in text
    assert text.splitlines()[-1].endswith("64: 49%")


def test_a_tail_is_whole_lines_within_the_size_asked():
    whole = log_tail(str(RAW), 1 << 20).splitlines()
    tail = log_tail(str(RAW), 500)
    assert len(tail.encode()) <= 500
    assert tail.splitlines() == whole[-len(tail.splitlines()):]
    assert tail.splitlines()[-3:] == [EPOCH_BAR, whole[-2], VALIDATION] and tail.endswith(VALIDATION + "\n")


def test_a_tail_reads_back_past_a_progress_bar_longer_than_the_size_asked(tmp_path):
    redraws = b"".join(b"\r\x1b[K  step %d/5000" % step for step in range(1, 5001))
    path = write_log(tmp_path, b"Starting training for 1 epochs...\n" + redraws)
    assert log_tail(path, 200) == "Starting training for 1 epochs...\n  step 5000/5000\n"


def test_a_single_line_longer_than_the_size_asked_is_cut_at_its_start(tmp_path):
    path = write_log(tmp_path, ("é" * 300 + "\n").encode())
    tail = log_tail(path, 102)
    assert tail == "é" * 50 + "\n"  # 101 bytes and the newline would split a character: it is left out


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\x1b]0;training\x07epoch 1", "epoch 1"),  # window title, ended by BEL
        ("\x1b]8;;http://x.example\x1b\\link\x1b]8;;\x1b\\ text", "link text"),  # hyperlink, ended by ST
        ("\x1b[2A\x1b[1;31mred\x1b[m\x1b(B plain", "red plain"),  # cursor up, colour, charset
        ("\x9b2Kbar", "bar"),  # 8-bit CSI
        ("a\x08b\x07c\x00d", "abcd"),  # other control characters
        ("50%\r100%\r\n", "100%\n"),  # a bar ended by CR LF keeps its last state
        ("loss 0.5\r\x1b[K", "loss 0.5"),  # a bar erased at the end shows what it last said
        ("tab\tkept   ", "tab\tkept"),
        ("done\x1b[1;3", "done"),  # a sequence not yet finished at the end
    ],
)
def test_clean_log_leaves_only_what_a_terminal_would_show(raw, clean):
    assert clean_log(raw) == clean


def test_there_is_no_log_without_a_path_or_a_file(tmp_path):
    assert log_tail("", 100) == ""
    assert log_tail(str(tmp_path / "missing.log"), 100) == ""


@pytest.fixture
def demo_job(frozen, cluster, team, training_data):
    """A job booked (as README's demo job) at the next slot; returns (job, its GPU)."""
    spec = JobSpecSerializer(data=dict(model="yolov8n.yaml", data=str(training_data), epochs=10, imgsz=64, batch=4))
    spec.is_valid(raise_exception=True)
    gpu = cluster["node1"][0]
    reservation = book(make_user("trainer-owner", team), [gpu], work={"job": spec.validated_data})
    return reservation.job, gpu


def test_a_job_whose_booking_has_not_begun_says_when_it_starts(demo_job):
    job, _ = demo_job
    assert job_log_text(job, 65536) == (
        f"Job {job.pk} has not started yet: it starts when its booking begins at 2030-01-07 10:00 UTC.\n"
    )


def test_a_job_past_its_start_that_no_worker_has_started_says_so(demo_job):
    job, _ = demo_job
    assert job_log_text(job, 65536, now=NEXT_SLOT + timedelta(minutes=3)) == (
        f"Job {job.pk} has not started yet: its booking began at 2030-01-07 10:00 UTC; "
        "it starts as soon as its node's worker picks it up.\n"
    )


def test_a_job_on_the_waitlist_says_so(demo_job, team, training_data):
    _, gpu = demo_job
    spec = JobSpecSerializer(data=dict(model="yolov8n.yaml", data=str(training_data), epochs=1))
    spec.is_valid(raise_exception=True)
    waiting = book(make_user("second", team), [gpu], work={"job": spec.validated_data}, waitlist=True).job
    assert job_log_text(waiting, 65536) == (
        f"Job {waiting.pk} has not started yet: its booking is on the waitlist for 2030-01-07 10:00 UTC; "
        "it starts when the booking is confirmed and begins.\n"
    )


def test_a_job_whose_process_has_written_nothing_yet_says_it_is_starting(demo_job, tmp_path):
    job, _ = demo_job
    TrainingJob.objects.filter(pk=job.pk).update(status=TrainingJob.Status.STARTING, log_path=write_log(tmp_path, b"\n"))
    job.refresh_from_db()
    assert job_log_text(job, 65536) == f"Job {job.pk} is starting: its training has not written to the log yet.\n"


def test_a_job_cancelled_before_it_ran_says_it_ended_and_why(demo_job):
    job, _ = demo_job
    owner = job.reservation.user
    services.reservation_cancel(reservation_id=job.reservation_id, actor=owner, reason="not needed")
    job.refresh_from_db()
    assert job_log_text(job, 65536) == (
        f"Job {job.pk} ended (stopped) before its training wrote a log. "
        "Reservation cancelled by trainer-owner: not needed\n"
    )


def test_a_running_job_serves_the_clean_tail_of_its_log(demo_job, tmp_path):
    job, _ = demo_job
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING, log_path=write_log(tmp_path, RAW.read_bytes())
    )
    job.refresh_from_db()
    text = job_log_text(job, 400)
    assert text.endswith(VALIDATION + "\n") and "\x1b" not in text and len(text.encode()) <= 400


def test_a_running_job_asked_for_less_than_a_line_gets_nothing_rather_than_not_started(demo_job, tmp_path):
    job, _ = demo_job
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING, log_path=write_log(tmp_path, RAW.read_bytes())
    )
    job.refresh_from_db()
    assert job_log_text(job, 1) == ""
