"""PresenceFusion (firmware/presence.py): PIR enters fast, radar holds, vacant only after
the hold time; each case feeds one second of evidence at a time, as node.py does."""
from presence import PresenceFusion

T0 = 1764300000


def _feed(p, t_from, t_to, pir, radar):
    """update() for every second in [t_from, t_to); returns the seconds that changed state."""
    changes = []
    for t in range(t_from, t_to):
        if p.update(t, pir, radar):
            changes.append(t)
    return changes


def test_pir_edge_enters_occupied_in_the_same_second():
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    assert p.update(T0, 0, None) is False
    assert p.present is False
    assert p.update(T0 + 1, 1, None) is True
    assert p.present is True


def test_pir_only_turns_vacant_exactly_hold_s_after_last_edge():
    p = PresenceFusion(hold_s=10, radar_hold_s=5)
    assert p.update(T0, 2, None)
    # Seconds T0+1 .. T0+9 without edges: still held (radar_hold_s must not apply).
    assert _feed(p, T0 + 1, T0 + 10, 0, None) == []
    assert p.present
    assert p.update(T0 + 10, 0, None) is True
    assert p.present is False


def test_pir_edge_during_hold_restarts_the_hold():
    p = PresenceFusion(hold_s=10)
    p.update(T0, 1, None)
    _feed(p, T0 + 1, T0 + 8, 0, None)
    assert p.update(T0 + 8, 1, None) is False  # already occupied: no change
    assert _feed(p, T0 + 9, T0 + 18, 0, None) == []
    assert p.update(T0 + 18, 0, None) is True and not p.present


def test_radar_still_target_holds_occupied_far_beyond_pir_hold():
    # A still class: one PIR edge, then only the radar sees anyone for an hour.
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    assert p.update(T0, 1, True)
    assert _feed(p, T0 + 1, T0 + 3600, 0, True) == []
    assert p.present


def test_radar_fitted_vacant_radar_hold_s_after_last_target():
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    p.update(T0, 1, True)
    _feed(p, T0 + 1, T0 + 100, 0, True)  # last target at T0+99
    assert _feed(p, T0 + 100, T0 + 200, 0, False) == [T0 + 99 + 60]
    assert not p.present


def test_radar_fitted_vacant_radar_hold_s_after_last_motion_without_target():
    # Radar fitted but never sees a target: the PIR edge alone is held radar_hold_s.
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    p.update(T0, 1, False)
    assert _feed(p, T0 + 1, T0 + 400, 0, False) == [T0 + 60]


def test_radar_hold_counts_from_the_later_of_motion_and_target():
    p = PresenceFusion(hold_s=300, radar_hold_s=30)
    p.update(T0, 1, True)
    _feed(p, T0 + 1, T0 + 10, 0, True)       # last target T0+9
    p.update(T0 + 20, 1, False)               # later motion at T0+20
    assert _feed(p, T0 + 21, T0 + 100, 0, False) == [T0 + 50]


def test_radar_alone_does_not_enter_when_a_pir_is_fitted():
    # DOMAIN: the PIR enters, the radar only holds (radar false positives, e.g. a fan,
    # must not make an empty room occupied when a PIR is there to confirm).
    p = PresenceFusion()
    assert _feed(p, T0, T0 + 120, 0, True) == []
    assert not p.present


def test_radar_only_node_enters_on_radar_and_leaves_after_radar_hold():
    p = PresenceFusion(hold_s=300, radar_hold_s=20)
    assert _feed(p, T0, T0 + 5, None, False) == []
    assert p.update(T0 + 5, None, True) is True and p.present
    _feed(p, T0 + 6, T0 + 50, None, True)    # last target T0+49
    assert _feed(p, T0 + 50, T0 + 200, None, False) == [T0 + 69]


def test_no_sensors_never_occupied():
    p = PresenceFusion()
    assert _feed(p, T0, T0 + 600, None, None) == []
    assert not p.present


def test_update_returns_true_exactly_on_state_changes():
    p = PresenceFusion(hold_s=5, radar_hold_s=3)
    evidence = [0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    prev = p.present
    for i, edges in enumerate(evidence):
        changed = p.update(T0 + i, edges, None)
        assert changed == (p.present != prev), (i, changed, p.present)
        prev = p.present
    # Two occupied spells (edges at 1..4, then 12..13), each ending: four changes.
    p2 = PresenceFusion(hold_s=5, radar_hold_s=3)
    n = sum(1 for i, e in enumerate(evidence) if p2.update(T0 + i, e, None))
    assert n == 4, n


def test_changed_hold_times_take_effect():
    # A `config` command sets the hold times on the running fusion (node.py).
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    p.hold_s = 20
    p.radar_hold_s = 7
    p.update(T0, 1, None)
    assert _feed(p, T0 + 1, T0 + 100, 0, None) == [T0 + 20]
    p = PresenceFusion(hold_s=300, radar_hold_s=60)
    p.radar_hold_s = 7
    p.update(T0, 1, True)
    assert _feed(p, T0 + 1, T0 + 100, 0, False) == [T0 + 7]
