"""Metric thresholds and the definition texts shown next to every figure, taken from
DOMAIN.md ("Room-usage metrics", "Environment thresholds", "Smart-campus coverage")."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# -- environment (DOMAIN.md "Environment thresholds": occupied time only unless noted) --
CO2_NOTICE_PPM = 1000       # GB/T 18883-2022 indoor air: 0.10%
CO2_BREACH_PPM = 1500       # GB/T 17226-2017 classrooms: daily mean <= 0.15%
TEMP_BAND_C = (16.0, 28.0)  # GB/T 18883-2022: 22-28 summer, 16-24 winter (check)
RH_BAND_PCT = (30.0, 80.0)  # GB/T 18883-2022: 40-80 summer, 30-60 winter (check)
DESK_LUX_MIN = 300.0        # GB 7793-2010 maintained desk illuminance
NOISE_UNOCCUPIED_MAX_DBA = 45.0   # GB 50118-2010 via GB 50099-2011, unoccupied LAeq (check)

# -- room usage (DOMAIN.md "Room-usage metrics") ---------------------------------------
NO_SHOW_OCCUPIED_SHARE = 0.20      # a booked period with occupied < 20% of the period ...
NO_SHOW_FIRST_MINUTES = 10         # ... or no presence in its first 10 minutes
UNSCHEDULED_MIN_MINUTES = 10       # >= 10 consecutive occupied minutes outside every booking
OVER_USED_UTILISATION = 0.9        # the brief: rooms over-used when utilisation > 0.9
MAX_RANGE_DAYS = 400
TREND_WEEKS = 12     # the coverage trend's ISO weeks by default (the API and the region pages)


@dataclass(frozen=True)
class CoveragePolicy:
    """DOMAIN.md "Smart-campus coverage" default policy; shown beside every figure."""
    instrumented_share_min: float = 0.8   # teaching spaces with an assigned node / teaching spaces
    live_share_min: float = 0.9           # live instrumented spaces / instrumented spaces
    delivered_min: float = 0.9            # a node is live when it delivered >= 90% of expected windows
    week_min_days: int = 4                # covered for a week when covered on >= 4 of its school days
    goal: float = 0.95                    # 95% of primary and secondary schools
    new_style_goal: int = 1000            # 1000 new-style teaching spaces

    def as_dict(self) -> dict:
        return asdict(self)


USAGE = {
    "available_minutes": "school-hours minutes (the school's day_start-day_end, school-local time) "
                         "on its school days in the range: its weekdays, minus holidays, plus make-up "
                         "workdays from the imported calendar",
    "occupied_minutes": "occupied seconds reported by the room's node(s) within available time / 60",
    "utilisation": "occupied minutes within available / available minutes",
    "occupied_hours": "occupied minutes within available / 60",
    "observed_minutes": "minutes within available time covered by windows the room's node(s) delivered",
    "data_completeness": "observed minutes / available minutes (windows received / windows expected)",
    "heatmap": "per weekday (0 = Monday) and school-local hour over every date in the range: "
               "occupied minutes / observed minutes",
    "peak_period": "the timetable period (or, with no timetable, the hour of the school day) "
                   "with the highest utilisation across the range",
    "occupied_minute": "minute-level rules use minutes: a minute is occupied when at least 30 of its "
                       "seconds were occupied and has presence when any were (a window longer than a "
                       "minute is spread evenly over its minutes)",
    "scheduled_minutes": "minutes inside timetable periods booked for the room, on school days",
    "scheduled_occupied_minutes": "occupied minutes inside those booked periods",
    "period_utilisation": "occupied minutes inside the period / period minutes, over its school days",
    "no_show": "a booked period with occupied < 20% of the period, or no presence in its first "
               "10 minutes (a period the node did not observe for at least half its minutes is "
               "not judged and counts as without data)",
    "unscheduled_use": ">= 10 consecutive occupied minutes outside every booked period",
}

SCHOOL_USAGE = {
    **USAGE,
    "school_utilisation": "occupied minutes within available of the rooms with data / "
                          "(available minutes x rooms with data)",
    "rooms_with_data": "rooms whose node delivered at least one window within available time in the range",
    "rooms_never_used": "rooms with data and no occupied minute within available time",
    "rooms_over_used": "rooms with utilisation > 0.9",
    "ranking": "rooms with data, highest utilisation first",
}

ENVIRONMENT = {
    "co2_mean_ppm": "time-weighted mean of the windows' mean CO2 over all observed time",
    "co2_max_ppm": "highest window mean CO2",
    "minutes_over_1000_ppm": "occupied minutes in windows with mean CO2 > 1000 ppm "
                             "(notice, GB/T 18883-2022 indoor air 0.10%)",
    "minutes_over_1500_ppm": "occupied minutes in windows with mean CO2 > 1500 ppm "
                             "(breach, GB/T 17226-2017 classrooms 0.15%)",
    "worst_hour": "the school-local hour with the highest mean CO2",
    "temp_in_band_share": "occupied time with 16 <= temperature <= 28 degC / occupied time with a reading",
    "rh_in_band_share": "occupied time with 30 <= RH <= 80% / occupied time with a reading",
    "desk_lux_mean": "ceiling lux x the room's lux_factor, mean over occupied time",
    "minutes_below_300_lux": "occupied minutes with desk lux < 300 (GB 7793-2010; lux_factor as "
                             "it was when the window was rolled up)",
    "lux_ok_share": "occupied time with desk lux >= 300 / occupied time with a reading",
    "noise_laeq_unoccupied_dba": "energy mean (LAeq) of the window levels over unoccupied windows only",
    "minutes_noise_over_45_dba": "unoccupied minutes with window LAeq > 45 dB(A) (GB 50118-2010)",
}

COVERAGE = {
    "teaching_spaces": "rooms flagged teaching_space in the registry",
    "instrumented_share": "teaching spaces with a node assigned during the school's hours that day / "
                          "teaching spaces",
    "live_share": "instrumented spaces whose node(s) delivered >= 90% of the expected windows that day / "
                  "instrumented spaces; expected windows = school-hours seconds / window length",
    "covered_day": "instrumented share >= 0.8 and live share >= 0.9 on a school day",
    "covered_week": "covered on at least 4 of the school's school days in the ISO week "
                    "(all of them when it has fewer than 4)",
    "coverage": "covered schools / schools in the region that have a school day in the period "
                "(schools with no nodes count)",
    "gap_schools": "more covered schools needed to reach the 95% goal",
    "reason": "why a school is not covered: not_enough_rooms_instrumented (instrumented share too low), "
              "nodes_offline (most failing nodes delivered nothing), data_gaps (they delivered some, "
              "under 90%)",
    "live_new_style_spaces": "new-style teaching spaces (new_style) that were live (on enough days for "
                             "a week), against the 1000-space goal",
}
