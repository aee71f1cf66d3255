"""Presence fusion (DOMAIN.md): a PIR edge enters "occupied" fast, a radar target holds
it, and the room turns vacant only after both have been quiet for the hold time.

This is the occupancy logic of the Matter/Zigbee occupancy-sensing cluster
(PIR "occupied-to-unoccupied delay"), with the radar as the hold sensor."""


class PresenceFusion:
    def __init__(self, hold_s=300, radar_hold_s=30):
        self.hold_s = hold_s              # PIR-only hold
        self.radar_hold_s = radar_hold_s  # hold after the last target or motion, radar fitted
        self.present = False
        self.motion_t = None              # last second with a PIR edge
        self.radar_t = None               # last second with a radar target

    def update(self, t, pir, radar):
        """One second of evidence: PIR rising edges and the radar's target (each None
        when that sensor is absent or failed). Returns True when the fused state changed
        at t."""
        if pir:
            self.motion_t = t
        if radar:
            self.radar_t = t
        was = self.present
        if not was:
            # Without a PIR the radar alone has to enter occupied.
            self.present = bool(pir or (radar and pir is None))
        elif radar is not None:
            # Radar fitted: a still class keeps it busy, so a short hold after the last
            # target or motion is enough to bridge sensor drop-outs.
            a = self.motion_t
            b = self.radar_t
            last = b if a is None or (b is not None and b > a) else a
            self.present = last is not None and t - last < self.radar_hold_s
        else:
            a = self.motion_t
            self.present = a is not None and t - a < self.hold_s
        return self.present != was
