"""PIR driver (firmware/drivers/pir.py): rising edges counted in the pin IRQ, debounced as
a quiet period on a controlled clock, take() clears; the handler allocates nothing."""
import micropython

from drivers.pir import PIR
from hw.sim_parts import SimPirPin


class FakePin:
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self):
        self.handler = None
        self.trigger = None
        self.calls = 0

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger
        self.calls += 1

    def edge(self):
        self.handler(self)


class Ticks:
    def __init__(self, ms=0):
        self.ms = ms

    def __call__(self):
        return self.ms


def _edges_at(times_ms, debounce_ms=50):
    pin = FakePin()
    clock = Ticks()
    pir = PIR(pin, debounce_ms=debounce_ms, ticks_ms=clock)
    for t in times_ms:
        clock.ms = t
        pin.edge()
    return pir


def test_registers_a_rising_edge_handler():
    pin = FakePin()
    PIR(pin)
    assert pin.trigger == FakePin.IRQ_RISING and pin.handler is not None and pin.calls == 1


def test_each_separated_rising_edge_counts():
    pir = _edges_at([1000, 3000, 5000])
    assert pir.take() == 3


def test_edges_closer_than_debounce_count_once():
    pir = _edges_at([1000, 1010, 1049])
    assert pir.take() == 1


def test_edge_exactly_debounce_after_the_previous_counts():
    pir = _edges_at([1000, 1050])
    assert pir.take() == 2


def test_bounce_burst_longer_than_debounce_still_counts_once():
    # Quiet-period debounce: every bounce restarts the window.
    pir = _edges_at([1000, 1030, 1060, 1090, 1120])
    assert pir.take() == 1
    pir2 = _edges_at([1000, 1030, 1060, 1090, 1120, 1170])
    assert pir2.take() == 2


def test_first_edge_counts_even_at_tick_zero():
    pir = _edges_at([0])
    assert pir.take() == 1


def test_take_returns_and_clears_the_count():
    pin = FakePin()
    clock = Ticks(10000)
    pir = PIR(pin, ticks_ms=clock)
    pin.edge()
    clock.ms += 2000
    pin.edge()
    assert pir.take() == 2
    assert pir.take() == 0
    clock.ms += 2000
    pin.edge()
    assert pir.take() == 1


def test_debounce_works_across_the_ticks_wraparound():
    import time
    start = time.ticks_add(0, -20)  # 20 ms before the tick counter wraps
    pir = _edges_at([start, time.ticks_add(start, 30), time.ticks_add(start, 100)])
    assert pir.take() == 2


def test_irq_handler_allocates_nothing():
    pin = FakePin()
    clock = Ticks(5000)
    pir = PIR(pin, ticks_ms=clock)
    handler = pin.handler
    micropython.heap_lock()
    try:
        for i in range(5):
            clock.ms += 1000
            handler(pin)
    finally:
        micropython.heap_unlock()
    assert pir.take() == 5


def test_zero_debounce_counts_every_edge():
    pir = _edges_at([1, 1, 1], debounce_ms=0)
    assert pir.take() == 3


def test_bad_debounce_is_refused():
    try:
        PIR(FakePin(), debounce_ms=-1)
    except ValueError:
        return
    raise AssertionError("negative debounce accepted")


def test_deinit_removes_the_handler():
    pin = FakePin()
    pir = PIR(pin)
    pir.deinit()
    assert pin.handler is None


class Room:
    people = 4
    moving = True
    noise_dba = 50.0


def test_sim_pin_edges_two_sim_seconds_apart_survive_debounce_at_any_speed():
    # The sim clock jumps seconds while real time stands still: the driver must debounce
    # on the pin's sim-time ticks, not on time.ticks_ms().
    now = [1764300000.0]
    pin = SimPirPin(Room(), lambda: now[0])
    pir = PIR(pin, ticks_ms=pin.ticks_ms)
    fired = 0
    for s in range(10):
        now[0] += 1
        fired += pin.step(int(now[0]))
    assert fired == 5
    assert pir.take() == 5
