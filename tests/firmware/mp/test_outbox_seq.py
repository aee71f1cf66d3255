"""seq of the flash outbox (firmware/outbox.py): strictly increasing across reboots (a
reboot is a new Outbox on the same files), seq file written once per block, resume from
the reserved ceiling, never below what is on flash.

Files are created in the current directory (the pytest driver runs us in a temp dir)
under a unique name and removed afterwards."""
import os
import time

from outbox import SEQ_MAX, Outbox

_counter = [0]
ROOT = "ob_seqtest"


def _path():
    _counter[0] += 1
    return "seqtest_%d_%d.dat" % (time.ticks_us(), _counter[0])


def _read(path):
    with open(path) as f:
        return f.read()


def _cleanup(path):
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass
    try:
        for name in os.listdir(ROOT):
            os.remove(ROOT + "/" + name)
        os.rmdir(ROOT)
    except OSError:
        pass


class SeqStore:
    """A boot of the outbox, seen only through its seq: take() appends an event."""

    def __init__(self, path, block=256):
        self.outbox = Outbox(ROOT, seq_path=path, block=block)

    def take(self):
        return self.outbox.append_event(1764300000, True)

    def peek(self):
        return self.outbox.seq


def _lose_records():
    # Without the records on flash only the seq file says where seq stands.
    for name in os.listdir(ROOT):
        os.remove(ROOT + "/" + name)


def test_fresh_store_counts_from_zero_strictly_increasing():
    path = _path()
    try:
        s = SeqStore(path, block=4)
        got = [s.take() for _ in range(10)]
        assert got == list(range(10)), got
        assert s.peek() == 10
    finally:
        _cleanup(path)


def test_strictly_increasing_across_simulated_reboots():
    path = _path()
    try:
        seen = []
        for takes in (3, 0, 4, 9, 1, 5):  # a reboot after each batch, one with no take
            s = SeqStore(path, block=4)
            seen.extend(s.take() for _ in range(takes))
        for a, b in zip(seen, seen[1:]):
            assert b > a, seen
    finally:
        _cleanup(path)


def test_reboot_resumes_from_the_reserved_ceiling_skipping_never_repeating():
    path = _path()
    try:
        s = SeqStore(path, block=4)
        assert [s.take() for _ in range(3)] == [0, 1, 2]
        # Power cut here: 3 was never used. The next boot starts at the ceiling 4.
        _lose_records()
        s2 = SeqStore(path, block=4)
        assert s2.take() == 4
        assert _read(path) == "8"
        # A boot that takes nothing still burns a block: never hands out 5..7 again.
        _lose_records()
        SeqStore(path, block=4)
        assert SeqStore(path, block=4).take() == 12
    finally:
        _cleanup(path)


def test_file_is_written_once_per_block_not_per_take():
    path = _path()
    try:
        s = SeqStore(path, block=4)
        contents = [_read(path)]
        for _ in range(12):
            s.take()
            contents.append(_read(path))
        # The ceiling moves only when take() crosses into a new block (values 4 and 8).
        assert contents == ["4", "4", "4", "4", "4", "8", "8", "8", "8",
                            "12", "12", "12", "12"], contents
    finally:
        _cleanup(path)


def test_write_is_atomic_and_leaves_no_temp_file():
    path = _path()
    try:
        s = SeqStore(path, block=2)
        for _ in range(5):
            s.take()
        names = os.listdir()
        assert path in names and (path + ".tmp") not in names, names
    finally:
        _cleanup(path)


def test_exhausted_seq_raises_instead_of_wrapping():
    # Wrapping to 0 would repeat numbers the server already stored (and drop new data).
    path = _path()
    try:
        with open(path, "w") as f:
            f.write(str(SEQ_MAX - 2))
        s = SeqStore(path, block=256)
        assert s.take() == SEQ_MAX - 2
        assert s.take() == SEQ_MAX - 1
        try:
            n = s.take()
        except OverflowError:
            pass
        else:
            raise AssertionError("take() returned %d past SEQ_MAX" % n)
    finally:
        _cleanup(path)


def test_lost_seq_file_resumes_above_the_highest_seq_on_flash():
    # A lost or corrupted seq file must not make the server drop new data as duplicates.
    path = _path()
    try:
        s = SeqStore(path, block=4)
        assert [s.take() for _ in range(6)] == list(range(6))
        os.remove(path)
        assert SeqStore(path, block=4).take() == 6
        with open(path, "w") as f:
            f.write("garbage")
        assert SeqStore(path, block=4).take() == 7
    finally:
        _cleanup(path)
