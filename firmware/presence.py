"""Presence fusion (DOMAIN.md): a PIR edge enters "occupied" fast, a radar target
holds it, and the room turns vacant only after both have been quiet for the hold time.

This is the occupancy logic of the Matter/Zigbee occupancy-sensing cluster
(PIR "occupied-to-unoccupied delay"), with the radar as the hold sensor."""


class PresenceFusion:
    def __init__(self, hold_s=300, radar_hold_s=30):
        self.hold_s = hold_s
        self.radar_hold_s = radar_hold_s
        self.present = False
        self._last_motion_t = None  # last PIR edge
        self._last_radar_t = None   # last second with a radar target

    def update(self, t, pir_edges, radar_target):
        """One second of evidence. pir_edges / radar_target are None when that sensor
        is absent or failed. Returns True when the fused state changed at t."""
        if pir_edges:
            self._last_motion_t = t
        if radar_target:
            self._last_radar_t = t
        was = self.present
        if not self.present:
            # Without a PIR the radar alone has to enter occupied.
            if pir_edges or (radar_target and pir_edges is None):
                self.present = True
        else:
            self.present = self._held(t, radar_target is not None)
        return self.present != was

    def _held(self, t, radar_fitted):
        if radar_fitted:
            # Radar fitted: a still class keeps it busy, so a short hold after the
            # last target or motion is enough to bridge sensor drop-outs.
            last = self._latest()
            return last is not None and t - last < self.radar_hold_s
        return self._last_motion_t is not None and t - self._last_motion_t < self.hold_s

    def _latest(self):
        a, b = self._last_motion_t, self._last_radar_t
        if a is None:
            return b
        if b is None:
            return a
        return a if a > b else b

    def set_hold(self, hold_s=None, radar_hold_s=None):
        if hold_s is not None:
            self.hold_s = hold_s
        if radar_hold_s is not None:
            self.radar_hold_s = radar_hold_s
