"""matebit.progress: tqdm on a terminal, a few compact lines in a log, nothing when quiet."""

import io

from tqdm import tqdm

from matebit import progress as progress_module
from matebit.progress import Lines, Silent, progress, track


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_few_compact_lines_not_one_per_step(monkeypatch):
    monkeypatch.setattr(progress_module, "MIN_GAP_S", 0.0)  # no waiting in a test: the 5 % marks decide
    log = io.StringIO()
    bar = progress(1300, "train", "steps", file=log)
    assert isinstance(bar, Lines)
    for step in range(1300):
        bar.update(1)
        bar.set_postfix({"g_total": "0.53", "l1": "0.12"})
    bar.close()
    lines = log.getvalue().splitlines()
    assert 15 <= len(lines) <= 21, lines  # every 5 %, and the end
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("train: 65/1300 steps (5%), ") and "steps/s, ETA " in lines[0]
    assert lines[-1].startswith("train: 1300/1300 steps (100%)") and lines[-1].endswith("; g_total 0.53 l1 0.12")


def test_lines_are_at_least_min_gap_apart(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = progress(1000, "translate", "images", file=log, initial=100)
    for _ in range(800):  # 1000 updates a second: 5 % marks every 0.05 s, but lines at most every 5 s
        clock[0] += 0.001
        bar.update(1)
    assert log.getvalue() == ""
    clock[0] += 40.0  # a long step: a line after 30 s even between marks
    bar.update(1)
    assert log.getvalue().startswith("translate: 901/1000 images (90%)")
    bar.close()
    assert len(log.getvalue().splitlines()) == 1  # close() prints only when there is news
    bar = progress(10, "x", file=log)
    bar.update(10)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("x: 10/10 files (100%)")


def test_a_terminal_gets_tqdm_and_quiet_gets_nothing():
    term = Terminal()
    bar = progress(5, "train", "steps", file=term, initial=2)
    assert isinstance(bar, tqdm) and bar.n == 2
    bar.update(3)
    bar.set_postfix({"l1": "0.1"})
    bar.close()
    assert "\r" in term.getvalue() and "5/5" in term.getvalue()
    quiet = progress(5, "train", quiet=True, file=term)
    assert isinstance(quiet, Silent)
    quiet.update(5)
    quiet.set_postfix({"a": 1})
    quiet.close()


def test_track_counts_every_item_and_closes():
    log = io.StringIO()
    assert list(track(iter(range(7)), "prepare canny", "images", file=log)) == list(range(7))
    assert log.getvalue().splitlines()[-1].startswith("prepare canny: 7/7 images (100%)")
    assert list(track([1, 2], "x", quiet=True, file=log)) == [1, 2]
