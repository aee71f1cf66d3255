"""INMP441 driver and A-weighting (firmware/drivers/inmp441.py, aweight.py): levels from the
sim microphone, A-weighting against IEC 61672-1 at generated tones, probe on a dead line,
the datasheet start-up discard, and the unweighted dB(Z) fallback."""
import array
import math

from drivers.aweight import AWeighting
from drivers.inmp441 import INMP441, REF_RMS_COUNTS
from hw.sim_parts import SimI2S

FS = 16000
PEAK_AT_94DB = (2 ** 23 - 1) * 10 ** (-26 / 20)  # datasheet: 420,426 counts


def peak_for(db_spl):
    return PEAK_AT_94DB * 10 ** ((db_spl - 94) / 20)


def iec_a_db(f):
    """A(f) from the IEC 61672-1 Annex E closed form (independent of the filter code)."""
    f1, f2, f3, f4 = 20.598997, 107.65265, 737.86223, 12194.217
    ff = f * f
    ra = (f4 * f4 * ff * ff) / ((ff + f1 * f1) * math.sqrt((ff + f2 * f2) * (ff + f3 * f3))
                                * (ff + f4 * f4))
    return 20 * math.log10(ra) + 2.0


class ToneI2S:
    """machine.I2S stand-in generating sum-of-sines samples (24-bit, left-justified in
    32-bit slots), continuous across reads; `lead` samples of another value come first."""

    def __init__(self, tones, dc=0, lead=0, lead_value=0):
        self.tones = [(2 * math.pi * f / FS, a) for f, a in tones]
        self.dc = dc
        self.lead = lead
        self.lead_value = lead_value
        self.n = 0

    def readinto(self, buf):
        for i in range(len(buf)):
            n = self.n
            if n < self.lead:
                v = self.lead_value
            else:
                v = self.dc
                for w, a in self.tones:
                    v += a * math.sin(w * n)
                v = int(v) << 8
            buf[i] = v
            self.n = n + 1
        return 4 * len(buf)


class Room:
    def __init__(self, noise_dba):
        self.people = 0
        self.moving = False
        self.noise_dba = noise_dba


def clock():
    return 1764300000.0


def _tone_db(freq, db_spl=80.0, **kw):
    mic = INMP441(ToneI2S([(freq, peak_for(db_spl))]), **kw)
    return mic.measure()


def test_sim_room_at_70_db_reads_70_dba():
    mic = INMP441(SimI2S(Room(70.0), clock))
    mic.probe()
    db = mic.measure()
    assert abs(db - 70.0) <= 0.2, db
    assert mic.last_db == db


def test_sim_room_at_40_db_reads_40_dba():
    mic = INMP441(SimI2S(Room(40.0), clock))
    mic.probe()
    db = mic.measure()
    assert abs(db - 40.0) <= 0.2, db


def test_sim_level_follows_the_room_between_measurements():
    room = Room(45.0)
    mic = INMP441(SimI2S(room, clock))
    readings = []
    for level in (45.0, 62.5, 38.0):
        room.noise_dba = level
        readings.append(mic.measure())
    for got, want in zip(readings, (45.0, 62.5, 38.0)):
        assert abs(got - want) <= 0.2, readings


def test_unweighted_fallback_reads_the_same_1khz_level():
    for level in (40.0, 70.0):
        mic = INMP441(SimI2S(Room(level), clock), aweighting=False)
        db = mic.measure()
        assert abs(db - level) <= 0.2, (level, db)
        assert not mic.aweighting


def test_probe_raises_oserror_when_mic_absent():
    mic = INMP441(SimI2S(Room(60.0), clock, present=False))
    try:
        mic.probe()
    except OSError as e:
        assert "INMP441" in str(e)
    else:
        raise AssertionError("probe() passed on an all-zero line")


def test_probe_raises_oserror_on_a_line_stuck_high():
    mic = INMP441(ToneI2S([], dc=-1))  # SD pulled up: every bit 1 -> -1 in every slot
    try:
        mic.probe()
    except OSError:
        return
    raise AssertionError("probe() passed on a constant line")


def test_measure_raises_oserror_when_the_mic_goes_silent_after_probe():
    i2s = SimI2S(Room(55.0), clock)
    mic = INMP441(i2s)
    mic.probe()
    i2s.present = False
    for aweighting in (True, False):
        mic = INMP441(i2s, aweighting=aweighting)
        try:
            mic.measure()
        except OSError:
            continue
        raise AssertionError("measure() returned a level from zeros")


def test_reference_is_the_rms_of_the_datasheet_94_db_sine():
    # Datasheet "Understanding Sensitivity": 1 Pa at 1 kHz -> peak 420,426 counts.
    assert abs(REF_RMS_COUNTS - 420426 / math.sqrt(2)) < 1
    assert abs(_tone_db(1000, 94.0) - 94.0) <= 0.05
    assert abs(_tone_db(1000, 94.0, aweighting=False) - 94.0) <= 0.05


def test_a_weighting_attenuates_100_hz_by_19_1_db_relative_to_1_khz():
    ref = _tone_db(1000)
    low = _tone_db(100)
    # IEC 61672-1 table: -19.1 dB at 100 Hz.
    assert abs((low - ref) - (-19.1)) <= 0.3, low - ref


def test_unweighted_fallback_does_not_attenuate_100_hz():
    ref = _tone_db(1000, aweighting=False)
    low = _tone_db(100, aweighting=False)
    assert abs(low - ref) <= 0.2, low - ref


def test_a_weighting_matches_iec_61672_across_the_band():
    ref = _tone_db(1000)
    for f in (31.5, 63.0, 250.0, 500.0, 2000.0, 4000.0, 6300.0):
        got = _tone_db(f) - ref
        want = iec_a_db(f)
        assert abs(got - want) <= 0.3, (f, got, want)


def test_a_weighting_of_a_mixture_adds_energies():
    # 1 kHz and 100 Hz at the same level: 10 log10(1 + 10^(-19.1/10)) = +0.05 dB over 1 kHz.
    p = peak_for(70.0)
    mic = INMP441(ToneI2S([(1000, p), (100, p)]))
    db = mic.measure()
    assert abs(db - (70.0 + 10 * math.log10(1 + 10 ** (iec_a_db(100) / 10)))) <= 0.2, db


def test_dc_offset_is_ignored_by_both_paths():
    for aweighting in (True, False):
        mic = INMP441(ToneI2S([(1000, peak_for(60.0))], dc=50000), aweighting=aweighting)
        db = mic.measure()
        assert abs(db - 60.0) <= 0.2, (aweighting, db)


def test_first_samples_after_start_are_discarded():
    # Full-scale garbage for exactly the datasheet start-up span (2^18 SCK = 4096
    # samples), then a 50 dB tone: the reading must not see the garbage.
    i2s = ToneI2S([(1000, peak_for(50.0))], lead=4096, lead_value=0x7FFFFF00)
    mic = INMP441(i2s, n_samples=1024, chunk_samples=512)
    db = mic.measure()
    assert abs(db - 50.0) <= 0.2, db
    # 4096 discarded (256 ms at 16 kHz), then 256 filter warm-up + 1024 measured, read
    # in 512-sample chunks.
    assert i2s.n == 4096 + 1536


def test_capture_length_is_configurable_and_not_a_chunk_multiple():
    i2s = ToneI2S([(1000, peak_for(65.0))])
    mic = INMP441(i2s, n_samples=1000, chunk_samples=300, aweighting=False)
    mic.probe()
    start = i2s.n
    db = mic.measure()
    assert abs(db - 65.0) <= 0.2, db
    assert i2s.n - start == 1200  # four 300-sample chunks cover 1000 samples


def test_bad_arguments_are_refused():
    for kw in ({"n_samples": 10}, {"chunk_samples": 16}, {"n_samples": 256, "chunk_samples": 512},
               {"sample_rate": 44100}):
        try:
            INMP441(SimI2S(Room(50.0), clock), **kw)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % kw)
    # The unweighted path works at any rate.
    INMP441(SimI2S(Room(50.0), clock, sample_rate=48000), sample_rate=48000, aweighting=False)


def test_cal_db_offsets_the_reading():
    mic = INMP441(SimI2S(Room(50.0), clock), cal_db=-1.5)
    assert abs(mic.measure() - 48.5) <= 0.2


def test_aweighting_filter_state_carries_across_chunks():
    # Filtering a tone in one call or in odd-sized pieces gives the same energy.
    a = array.array("i", bytes(4 * 900))
    ToneI2S([(440, peak_for(70.0))]).readinto(a)
    mv = memoryview(a)
    whole = AWeighting()
    e1 = whole.run(mv, 8)
    parts = AWeighting()
    e2 = parts.run(mv[:7], 8) + parts.run(mv[7:400], 8) + parts.run(mv[400:], 8)
    assert abs(e1 - e2) <= 1e-9 * e1
