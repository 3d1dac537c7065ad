"""Window folding: radar reports, PIR, gas and environment samples into one reading's values."""

from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP
from firmware.window import Window, worse

RUN_ON_MICROPYTHON = True


class Report:
    """The fields of drivers.ld2410's Report that the window reads."""

    def __init__(self, state=0, moving=(0, 0), stationary=(0, 0)):
        self.target_state = state
        self.presence = 1 <= state <= 3
        self.moving_distance_cm, self.moving_energy = moving
        self.stationary_distance_cm, self.stationary_energy = stationary


def test_empty_radar_stream_is_bad_not_missing():
    w = Window()
    for _ in range(10):
        w.radar_missed()
    v = w.close(100)
    assert v["presence"] == [False, BAD]
    assert v["distance_cm"] == [0, BAD]
    assert v["occupancy"] == [0.0, BAD]
    assert "gas_ppm" not in v and "temperature_c" not in v and "motion" not in v


def test_nearest_distance_strongest_energy_and_occupancy_fraction():
    w = Window()
    for _ in range(6):
        w.add_radar(Report(0))
    w.add_radar(Report(1, moving=(250, 40)))
    w.add_radar(Report(2, stationary=(180, 20)))
    w.add_radar(Report(3, moving=(300, 70), stationary=(120, 15)))
    w.add_radar(Report(1, moving=(400, 55)))
    v = w.close(10)
    assert v["presence"] == [True, GOOD]
    assert v["distance_cm"] == [120, GOOD]
    assert v["energy"] == [70, GOOD]
    assert v["occupancy"] == [0.4, GOOD]


def test_few_reports_make_radar_suspect_and_window_resets():
    w = Window()
    for _ in range(4):
        w.add_radar(Report(1, moving=(100, 30)))
    assert w.close(10)["presence"] == [True, SUSPECT]
    for _ in range(10):
        w.add_radar(Report(0))
    v = w.close(10)
    assert v["presence"] == [False, GOOD]
    assert v["energy"] == [0, GOOD]


def test_auto_threshold_states_are_not_presence():
    w = Window()
    r = Report(1, moving=(90, 50))
    r.target_state = 4  # states 4-6: the module's auto-threshold routine (LD2410 protocol)
    r.presence = False
    for _ in range(10):
        w.add_radar(r)
    assert w.close(10)["presence"] == [False, GOOD]


def test_pir_events_counted_and_worst_quality_kept():
    w = Window()
    w.add_pir(False, 0, WARMING_UP)
    w.add_pir(True, 2, GOOD)
    w.add_pir(False, 1, GOOD)
    v = w.close(0)
    assert v["motion"] == [True, WARMING_UP]
    assert v["motion_events"] == [3, WARMING_UP]
    w.add_pir(False, 0, GOOD)
    v = w.close(0)
    assert v["motion"] == [False, GOOD] and v["motion_events"] == [0, GOOD]


def test_gas_mean_excludes_bad_samples_and_flags_it():
    w = Window()
    w.add_gas(10.0, 20000.0, GOOD)
    w.add_gas(20.0, 10000.0, GOOD)
    w.add_gas(999.0, 1.0, BAD)
    v = w.close(0)
    assert v["gas_ppm"] == [15.0, SUSPECT]
    assert v["gas_rs_ohm"] == [15000.0, SUSPECT]
    w.add_gas(3.0, 5.0, BAD)
    assert w.close(0)["gas_ppm"] == [3.0, BAD]
    w.add_gas(1.0, 5.0, WARMING_UP)
    w.add_gas(2.0, 5.0, GOOD)
    assert w.close(0)["gas_ppm"] == [1.5, WARMING_UP]


def test_env_latest_sample_then_flagged_when_it_goes_stale():
    w = Window()
    w.add_env(21.0, 40.0, 1000.0, GOOD)
    w.add_env(21.5, None, 1001.0, GOOD)  # a BMP280 has no humidity
    v = w.close(0)
    assert v["temperature_c"] == [21.5, GOOD]
    assert v["pressure_hpa"] == [1001.0, GOOD]
    assert "humidity_pct" not in v
    w.env_failed()
    v = w.close(0)
    assert v["temperature_c"] == [21.5, BAD]


def test_worse_orders_qualities():
    assert worse(GOOD, SUSPECT) == SUSPECT
    assert worse(BAD, WARMING_UP) == BAD
    assert worse(WARMING_UP, SUSPECT) == WARMING_UP
    assert worse(GOOD, GOOD) == GOOD


def test_gas_samples_without_a_value_are_reported_bad():
    w = Window()
    w.add_gas(None, None, BAD)
    w.add_gas(None, None, BAD)
    assert w.close(0)["gas_ppm"] == [None, BAD]
