"""PIR motion sensor (AM312 / HC-SR501) on a GPIO: counts debounced rising edges in the
pin IRQ; the node takes the count once a second as its fast "someone moved" evidence."""
import time

try:
    from machine import disable_irq, enable_irq
    _IRQ_CONTROL = True
except ImportError:  # the unix port's machine module has no IRQ control
    _IRQ_CONTROL = False


class PIR:
    """`pin` is an input machine.Pin (or anything with irq() and IRQ_RISING). `ticks_ms`
    is the clock the debounce reads; the sim passes its sim-time clock so that edges two
    sim seconds apart stay two seconds apart at 60x real time."""

    def __init__(self, pin, debounce_ms=50, ticks_ms=time.ticks_ms):
        if not 0 <= debounce_ms <= 10000:
            raise ValueError("debounce_ms must be 0..10000")
        self.pin = pin
        self.debounce_ms = debounce_ms
        self.ticks_ms = ticks_ms
        self.count = 0
        self._last = 0
        self._seen = False
        # The sensor output goes high on motion (AM312 / HC-SR501 datasheets: "high level
        # output" on trigger); a rising edge is one detection. The bound method is made
        # once here and kept by the pin, so the IRQ itself allocates nothing.
        pin.irq(trigger=pin.IRQ_RISING, handler=self.handler)

    def handler(self, pin):
        # Runs in IRQ context: ints and attribute stores only, no allocation.
        now = self.ticks_ms()
        quiet = time.ticks_diff(now, self._last) >= self.debounce_ms
        self._last = now
        # Debounce as a quiet period: an edge counts only if the line has had no rising
        # edge for debounce_ms, so a burst of bounces counts once however long it lasts.
        if quiet or not self._seen:
            self._seen = True
            self.count += 1

    def take(self):
        """Returns the edges counted since the last take() and clears the count, without
        losing an edge that arrives in between (IRQs off around the swap)."""
        state = disable_irq() if _IRQ_CONTROL else 0
        n = self.count
        self.count = 0
        if _IRQ_CONTROL:
            enable_irq(state)
        return n

    def deinit(self):
        self.pin.irq(handler=None)
