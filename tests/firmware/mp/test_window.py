"""WindowAggregator (firmware/window.py) against PROTOCOL.md "Window report": aligned ts,
occupancy counts, PIR/radar null vs 0, env means, LAeq noise, window length changes."""
from window import WindowAggregator

T0 = 1764300000  # a multiple of 60 and of 300
ENV = ("co2_ppm", "temp_c", "rh_pct", "lux", "noise_dba")


def _doc(r):
    """A report tuple (the field order of PROTOCOL.md) as the window report's JSON shape."""
    return {"ts": r[0], "win": r[1],
            "occ": {"occupied_s": r[2], "present": r[3], "pir": r[4], "radar_s": r[5]},
            "env": dict(zip(ENV, r[6:]))}


def _env(**values):
    """An env sample as Sensors.sample_env() gives it: a list in ENV order, None = no reading."""
    return [values.get(k) for k in ENV]


def _run(w, t_from, t_to, occupied=False, pir=None, radar=None):
    """add_second for every t in [t_from, t_to); returns the reports emitted."""
    out = []
    for t in range(t_from, t_to):
        r = w.add_second(t, occupied, pir, radar)
        if r is not None:
            out.append(_doc(r))
    return out


def _close(w, t):
    """Feed the first second of the next window; returns the report it emits."""
    r = w.add_second(t, False, None, None)
    assert r is not None, "no report at %d" % t
    assert len(r) == 11, r
    return _doc(r)


def test_report_ts_is_aligned_window_start_even_when_started_mid_window():
    w = WindowAggregator(60)
    assert _run(w, T0 + 17, T0 + 60) == []
    r = _close(w, T0 + 60)
    assert r["ts"] == T0 and r["ts"] % 60 == 0 and r["win"] == 60, r


def test_report_is_emitted_on_the_first_second_of_the_next_window_only():
    w = WindowAggregator(60)
    emitted = []
    for t in range(T0, T0 + 181):
        if w.add_second(t, False, None, None) is not None:
            emitted.append(t)
    assert emitted == [T0 + 60, T0 + 120, T0 + 180], emitted


def test_occupied_seconds_and_present_at_window_end():
    w = WindowAggregator(60)
    _run(w, T0, T0 + 18, occupied=False)
    _run(w, T0 + 18, T0 + 60, occupied=True)   # 42 occupied seconds, occupied at end
    r = _close(w, T0 + 60)
    assert r["occ"]["occupied_s"] == 42, r
    assert r["occ"]["present"] is True
    _run(w, T0 + 61, T0 + 70, occupied=True)
    _run(w, T0 + 70, T0 + 120, occupied=False)
    r = _close(w, T0 + 120)
    assert r["occ"]["occupied_s"] == 9, r  # T0+61..69; T0+60 (from _close) was vacant
    assert r["occ"]["present"] is False


def test_pir_is_null_without_a_pir_and_zero_with_a_quiet_pir():
    absent = WindowAggregator(60)
    _run(absent, T0, T0 + 60, pir=None)
    assert _close(absent, T0 + 60)["occ"]["pir"] is None

    quiet = WindowAggregator(60)
    _run(quiet, T0, T0 + 60, pir=0)
    assert _close(quiet, T0 + 60)["occ"]["pir"] == 0


def test_pir_counts_rising_edges_over_the_window():
    w = WindowAggregator(60)
    for t in range(T0, T0 + 60):
        w.add_second(t, True, 2 if t % 10 == 0 else 0, None)
    assert _close(w, T0 + 60)["occ"]["pir"] == 12


def test_radar_seconds_counted_and_null_without_radar():
    w = WindowAggregator(60)
    for t in range(T0, T0 + 60):
        w.add_second(t, True, 0, t < T0 + 40)
    r = _close(w, T0 + 60)
    assert r["occ"]["radar_s"] == 40, r

    w = WindowAggregator(60)
    _run(w, T0, T0 + 60, radar=None)
    assert _close(w, T0 + 60)["occ"]["radar_s"] is None


def test_env_means_co2_integer_temp_rh_one_decimal():
    w = WindowAggregator(60)
    w.add_second(T0, False, None, None)
    w.add_env(_env(co2_ppm=800, temp_c=22.0, rh_pct=48.0, lux=400, noise_dba=None))
    w.add_env(_env(co2_ppm=805, temp_c=22.1, rh_pct=48.15, lux=421, noise_dba=None))
    w.add_env(_env(co2_ppm=812, temp_c=22.3, rh_pct=None, lux=None, noise_dba=None))
    env = _close(w, T0 + 60)["env"]
    # co2 (800+805+812)/3 = 805.67 -> 806, an int; temp 22.133 -> 22.1;
    # rh (48.0+48.15)/2 = 48.075 -> 48.1 (None readings are not averaged as zero).
    assert env["co2_ppm"] == 806 and isinstance(env["co2_ppm"], int), env
    assert env["temp_c"] == 22.1, env
    assert env["rh_pct"] == 48.1, env
    assert env["lux"] == 411, env  # (400+421)/2 = 410.5, rounded half up
    assert env["noise_dba"] is None, env


def test_noise_is_energy_mean_laeq_not_mean_of_db():
    # 10*log10((10^4 + 10^6) / 2) = 57.03 dB; the arithmetic mean would say 50.
    w = WindowAggregator(60)
    w.add_second(T0, False, None, None)
    w.add_env(_env(noise_dba=40.0))
    w.add_env(_env(noise_dba=60.0))
    assert _close(w, T0 + 60)["env"]["noise_dba"] == 57.0


def test_env_is_null_without_samples_and_does_not_leak_into_next_window():
    w = WindowAggregator(60)
    w.add_second(T0, False, None, None)
    w.add_env(_env(co2_ppm=900, temp_c=21.0, rh_pct=40.0, lux=300, noise_dba=45.0))
    first = _close(w, T0 + 60)
    assert first["env"]["co2_ppm"] == 900
    second = _close(w, T0 + 120)
    assert second["env"] == {"co2_ppm": None, "temp_c": None, "rh_pct": None,
                             "lux": None, "noise_dba": None}, second["env"]


def test_occupied_s_never_exceeds_win():
    w = WindowAggregator(60)
    _run(w, T0, T0 + 60, occupied=True)
    r = _close(w, T0 + 60)
    assert r["occ"]["occupied_s"] == 60 and r["occ"]["occupied_s"] <= r["win"]


def _spans(reports):
    return [(r["ts"], r["win"]) for r in reports]


def _assert_tiled(reports):
    # No overlap, no gap: each window starts where the previous one ended, aligned.
    for a, b in zip(reports, reports[1:]):
        assert b["ts"] == a["ts"] + a["win"], _spans(reports)
    for r in reports:
        assert r["ts"] % r["win"] == 0, _spans(reports)


def test_set_window_longer_switches_only_at_a_boundary_of_the_new_length():
    w = WindowAggregator(60)
    t_start = T0 + 60  # T0+60 is not a multiple of 300
    _run(w, t_start, t_start + 30)
    w.set_window(300)
    reports = _run(w, t_start + 30, T0 + 1201)
    assert _spans(reports) == [
        (T0 + 60, 60), (T0 + 120, 60), (T0 + 180, 60), (T0 + 240, 60),
        (T0 + 300, 300), (T0 + 600, 300), (T0 + 900, 300)], _spans(reports)
    _assert_tiled(reports)


def test_set_window_shorter_waits_for_the_end_of_the_current_window():
    w = WindowAggregator(300)
    _run(w, T0, T0 + 100)
    w.set_window(60)
    reports = _run(w, T0 + 100, T0 + 421)
    assert _spans(reports) == [(T0, 300), (T0 + 300, 60), (T0 + 360, 60)], _spans(reports)
    # The 300 s window was not cut short: it saw all its seconds.
    _assert_tiled(reports)


def test_set_window_non_multiple_waits_for_common_boundary():
    # 60 -> 90: the first instant that ends a 60 s window and starts a 90 s one is a
    # multiple of 180.
    w = WindowAggregator(60)
    base = T0 - T0 % 180
    _run(w, base, base + 10)
    w.set_window(90)
    reports = _run(w, base + 10, base + 361)
    assert _spans(reports) == [(base, 60), (base + 60, 60), (base + 120, 60),
                               (base + 180, 90), (base + 270, 90)], _spans(reports)
    _assert_tiled(reports)


def test_set_window_back_to_current_length_cancels_pending_change():
    w = WindowAggregator(60)
    _run(w, T0, T0 + 10)
    w.set_window(300)
    w.set_window(60)
    reports = _run(w, T0 + 10, T0 + 601)
    assert all(r["win"] == 60 for r in reports) and len(reports) == 10, _spans(reports)
