"""The dashboards in a real browser (Debian's Chromium, headless, via Playwright)
against a fleet server fed by virtual nodes: every figure a page shows equals the JSON
API's, the language switch turns the labels Chinese, a technician assigns a device and
sees its identify ack, and no page makes a request outside the server's own origin."""
import time
from datetime import date

import pytest

from fleet_server.alerts.evaluator import evaluate
from fleet_server.metrics.schooltime import iso_week

pytestmark = pytest.mark.timeout(600)


def figures(page) -> dict[str, tuple[str, str]]:
    """data-figure id -> (data-value, visible text) of everything the page marks."""
    # The visible text: an SVG <title> (the hover text) is left out.
    rows = page.eval_on_selector_all("[data-figure]", """els => els.map(e => {
        const c = e.cloneNode(true); c.querySelectorAll('title').forEach(t => t.remove());
        return [e.dataset.figure, e.dataset.value, c.textContent.trim()]; })""")
    return {k: (v, text) for k, v, text in rows}


def num(value: str) -> float | None:
    return None if value in ("", "None") else float(value)


def pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def week_range(week: str) -> tuple[date, date]:
    return iso_week(int(week[:4]), int(week[6:]))


def test_school_page_figures_equal_the_usage_and_environment_api(fed, en_page):
    first, last = week_range(fed.week)
    # The real alert rules as of a week from now: by then the three stopped nodes have
    # been offline for more than 30 minutes of school hours, so the school has open alerts.
    with fed.server.app.state.engine.begin() as conn:
        evaluate(conn, time.time() + 7 * 86400)
    en_page.goto(f"/schools/{fed.school_id}?week={fed.week}")
    shown = figures(en_page.page)
    api = fed.api(f"/api/v1/schools/{fed.school_id}/usage", **{"from": str(first), "to": str(last)})
    assert api["utilisation"] > 0.05, "the virtual nodes should have used the rooms"
    assert num(shown["school.utilisation"][0]) == api["utilisation"]
    assert shown["school.utilisation"][1] == pct(api["utilisation"])
    for key in ("no_show_count", "unscheduled_minutes", "occupied_hours", "rooms_total"):
        assert num(shown[f"school.{key}"][0]) == api[key], key
    # Ranked as the API ranks them, each room's figures equal.
    order = en_page.page.eval_on_selector_all("table.ranked tbody tr", "rs => rs.map(r => +r.dataset.room)")
    assert order == [r["room_id"] for r in api["rooms"]["items"]]
    for r in api["rooms"]["items"]:
        value, text = shown[f"room.{r['room_id']}.utilisation"]
        if r["has_data"]:
            assert num(value) == r["utilisation"] and text == pct(r["utilisation"])
            assert num(shown[f"room.{r['room_id']}.no_show_count"][0]) == r["no_show_count"]
            assert num(shown[f"room.{r['room_id']}.unscheduled_minutes"][0]) == r["unscheduled_minutes"]
            assert num(shown[f"room.{r['room_id']}.data_completeness"][0]) == r["data_completeness"]
            # the bar chart shows the same value
            assert num(shown[f"room.{r['room_id']}.utilisation"][0]) == r["utilisation"]
    assert sum(1 for r in api["rooms"]["items"] if r["has_data"]) == 3
    # Heatmap: one cell per API cell, same utilisation, the % printed in the cell.
    assert api["heatmap"]
    for c in api["heatmap"]:
        value, text = shown[f"heatmap.{c['weekday']}.{c['hour']}"]
        assert num(value) == c["utilisation"]
        assert text.startswith(str(round(c["utilisation"] * 100)))
    # Air quality per room equals the room environment API over the same range.
    for code in ("C1", "C2", "L1"):
        room_id = fed.room_ids[code]
        env = fed.api(f"/api/v1/rooms/{room_id}/environment", **{"from": str(first), "to": str(last)})
        for key in ("co2_mean_ppm", "minutes_over_1000_ppm", "minutes_over_1500_ppm", "temp_in_band_share"):
            assert num(shown[f"env.{room_id}.{key}"][0]) == env[key], (code, key)
    # Offline nodes: the three stopped nodes, as the devices API says.
    offline = [d for d in fed.api("/api/v1/devices")["items"]
               if d["room_id"] in fed.room_ids.values() and not d["online"]]
    assert num(shown["school.offline_nodes"][0]) == len(offline) == 3
    # Open alerts: the alerts API's open alerts of the school, in its order, newest first.
    alerts = fed.api("/api/v1/alerts", school_id=fed.school_id, state="open", limit=20)     # the page shows 20
    assert alerts["total"] >= 3 and {"offline"} <= {a["kind"] for a in alerts["items"]}
    assert {a["device_id"] for a in alerts["items"] if a["kind"] == "offline"} == {d["device_id"] for d in offline}
    assert num(shown["school.open_alerts"][0]) == alerts["total"]
    order = en_page.page.eval_on_selector_all("table.alerts tbody tr", "rs => rs.map(r => +r.dataset.alert)")
    assert order == [a["id"] for a in alerts["items"]]
    for a in alerts["items"]:
        assert shown[f"alert.{a['id']}.kind"][0] == a["kind"]
        assert shown[f"alert.{a['id']}.severity"][0] == a["severity"]
        assert shown[f"alert.{a['id']}.opened_at"][0] == a["opened_at"]
        if a["kind"] == "co2_breach":
            assert num(shown[f"alert.{a['id']}.peak_co2_ppm"][0]) == a["detail"]["peak_co2_ppm"]
    assert "node offline" in en_page.page.locator("table.alerts").inner_text()
    # Every figure heading has its tooltip and a CSV link that answers with CSV.
    for section in ("live", "ranked", "heat", "air", "alerts", "offline"):
        heading = en_page.page.locator(f"h2#{section}")
        assert heading.locator(".tip .tip-text").count() == 1
        href = heading.locator("a.csv").get_attribute("href")
        r = en_page.page.request.get(fed.base_url + href)
        assert r.ok and r.headers["content-type"].startswith("text/csv"), href
    csv_text = en_page.page.request.get(
        fed.base_url + en_page.page.locator("h2#ranked a.csv").get_attribute("href")).text()
    assert "utilisation" in csv_text.splitlines()[0]
    alerts_csv = en_page.page.request.get(
        fed.base_url + en_page.page.locator("h2#alerts a.csv").get_attribute("href")).text().splitlines()
    assert len(alerts_csv) == 1 + alerts["total"] and "kind" in alerts_csv[0]


def test_room_page_figures_equal_the_api_and_the_day_is_drawn(fed, en_page):
    room_id = fed.room_ids["C1"]
    en_page.goto(f"/rooms/{room_id}?date={fed.day}")
    shown = figures(en_page.page)
    usage = fed.api(f"/api/v1/rooms/{room_id}/usage", **{"from": fed.day, "to": fed.day})
    env = fed.api(f"/api/v1/rooms/{room_id}/environment", **{"from": fed.day, "to": fed.day})
    assert usage["utilisation"] > 0.1
    assert num(shown["room.utilisation"][0]) == usage["utilisation"]
    assert shown["room.utilisation"][1] == pct(usage["utilisation"])
    for key in ("occupied_hours", "no_show_count", "unscheduled_minutes", "data_completeness"):
        assert num(shown[f"room.{key}"][0]) == usage[key], key
    for key in ("co2_mean_ppm", "minutes_over_1000_ppm", "minutes_over_1500_ppm", "temp_in_band_share",
                "desk_lux_mean", "noise_laeq_unoccupied_dba"):
        assert num(shown[f"env.{key}"][0]) == env[key], key
    # The timeline: presence blocks and a CO2 line over ~600 windows, with the bands.
    assert en_page.page.locator("#chart-presence rect.occ").count() > 50
    points = en_page.page.locator("#chart-co2 polyline").first.get_attribute("points").split()
    assert len(points) > 300
    assert en_page.page.locator("#chart-co2 rect.band-breach").count() == 1
    assert en_page.page.locator("#chart-temperature rect.band-ok").count() == 1


def test_region_pages_equal_the_coverage_api_and_drill_down_to_a_school(fed, en_page):
    en_page.goto(f"/regions/330000?date={fed.day}")
    shown = figures(en_page.page)
    api = fed.api("/api/v1/coverage", region=330000, date=fed.day)
    assert api["schools"] == 2
    assert num(shown["region.coverage"][0]) == (api["coverage"] or 0.0)
    for key in ("covered", "schools", "gap_schools"):
        assert num(shown[f"region.{key}"][0]) == api[key], key
    assert num(shown["region.new_style_live"][0]) == api["new_style"]["live"]
    policy = en_page.page.locator("p.policy").inner_text()
    assert "80%" in policy and "90%" in policy and "95%" in policy
    # The weekly trend: the trend API's 12 weeks ending with the shown day's week, the
    # chart's points and the table's figures alike; its CSV beside it.
    trend = fed.api("/api/v1/coverage/trend", region=330000, week=fed.week, weeks=12)["weeks"]
    assert len(trend) == 12 and trend[-1]["week"] == fed.week and trend[-1]["schools"] == 2
    for w in trend:
        assert shown[f"trend.{w['week']}.coverage_text"][0] == ("" if w["coverage"] is None else str(w["coverage"]))
        for key in ("covered", "schools", "gap_schools"):
            assert num(shown[f"trend.{w['week']}.{key}"][0]) == w[key], (w["week"], key)
        if w["coverage"] is None:
            assert f"trend.{w['week']}.coverage" not in shown
        else:
            assert num(shown[f"trend.{w['week']}.coverage"][0]) == w["coverage"]
            assert shown[f"trend.{w['week']}.coverage_text"][1].startswith(pct(w["coverage"]))
    heading = en_page.page.locator("h2#trend")
    assert heading.locator(".tip .tip-text").count() == 1
    trend_csv = en_page.page.request.get(fed.base_url + heading.locator("a.csv").get_attribute("href"))
    assert trend_csv.ok and trend_csv.headers["content-type"].startswith("text/csv")
    lines = trend_csv.text().splitlines()
    assert "coverage" in lines[0] and len(lines) == 1 + 12
    for child in api["children"]:
        assert num(shown[f"child.{child['code']}.gap_schools"][0]) == child["gap_schools"]
        if child["coverage"] is not None:
            assert num(shown[f"child.{child['code']}.coverage"][0]) == child["coverage"]
    # Drill down: province -> 杭州市 -> 西湖区 -> the school.
    en_page.page.locator("table a[href^='/regions/330100']").click()
    en_page.page.wait_for_url("**/regions/330100*")
    en_page.page.locator("table a[href^='/regions/330106']").click()
    en_page.page.wait_for_url("**/regions/330106*")
    county = fed.api("/api/v1/coverage", region=330106, date=fed.day)
    shown = figures(en_page.page)
    assert county["uncovered"]["total"] == num(shown["region.uncovered_total"][0])
    for s in county["uncovered"]["items"]:
        assert shown[f"uncovered.{s['school_id']}.reason"][0] == (s["reason"] or "")
        assert num(shown[f"uncovered.{s['school_id']}.instrumented_share"][0]) == s["instrumented_share"]
    assert {s["school_id"] for s in county["uncovered"]["items"]} == {fed.school_id, fed.other_school_id}
    en_page.page.locator(f"table.uncovered a[href^='/schools/{fed.school_id}']").click()
    en_page.page.wait_for_url(f"**/schools/{fed.school_id}*")
    assert "网页测试小学" in en_page.page.locator("h1").inner_text()


def test_fleet_page_shows_each_device_as_the_devices_api(fed, en_page):
    en_page.goto("/fleet")
    shown = figures(en_page.page)
    api = fed.api("/api/v1/devices")
    assert num(shown["fleet.total"][0]) == api["total"] == 4
    for d in api["items"]:
        assert shown[f"device.{d['device_id']}.online"][0] == str(d["online"])
        label = "online" if d["online"] else "offline"
        assert label in shown[f"device.{d['device_id']}.online"][1]
        assert num(shown[f"device.{d['device_id']}.rssi"][0]) == d["rssi"]
    # Data completeness today per node, as GET /devices/{id}/completeness for that date.
    today = en_page.page.locator("table.devices th[data-date]").get_attribute("data-date")
    for d in api["items"]:
        assert f"device.{d['device_id']}.completeness" in shown
        if d["device_id"] == fed.spare_device:
            continue        # still running: its counts move between the page and the API call
        share = fed.api(f"/api/v1/devices/{d['device_id']}/completeness", **{"from": today, "to": today})["share"]
        assert num(shown[f"device.{d['device_id']}.completeness"][0]) == share, d["device_id"]
    assert en_page.page.locator(f"ul.unassigned li[data-device='{fed.spare_device}']").count() == 1


def test_language_switch_turns_the_labels_chinese_and_sticks(fed, en_page):
    page = en_page.page
    en_page.goto(f"/schools/{fed.school_id}?week={fed.week}")
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Rooms ranked by utilisation" in page.locator("h2#ranked").inner_text()
    page.locator("#lang-switch").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert "教室使用率排名" in page.locator("h2#ranked").inner_text()
    assert "今日实时" in page.locator("h2#live").inner_text()
    assert "周" in page.locator("span.range").inner_text()            # dates in Chinese too
    assert "年" in page.locator("span.range").inner_text()
    en_page.goto("/fleet")                                              # the cookie keeps the choice
    assert "设备管理" in page.locator("h1").inner_text()


def test_chinese_browser_gets_chinese_pages(fed, zh_page):
    zh_page.goto(f"/regions/330000?date={fed.day}")
    assert zh_page.page.locator("html").get_attribute("lang") == "zh-CN"
    assert "智慧校园覆盖率" in zh_page.page.locator("h2#cov").inner_text()
    assert "浙江省" in zh_page.page.locator("h1").inner_text()


def test_assign_a_device_to_a_room_then_identify_and_see_the_ack(fed, zh_page):
    page = zh_page.page
    zh_page.goto("/fleet")
    page.locator(f"ul.unassigned li[data-device='{fed.spare_device}'] a.button").click()
    page.wait_for_url(f"**/fleet/devices/{fed.spare_device}*")
    page.select_option("#school", str(fed.school_id))
    page.get_by_role("button", name="下一步").click()
    page.select_option("#room", str(fed.room_ids["N1"]))
    page.locator("#assign-submit").click()
    page.wait_for_load_state()
    assert "N1" in page.locator("#current-room").inner_text()
    assert fed.api(f"/api/v1/devices/{fed.spare_device}/assignments")["room_id"] == fed.room_ids["N1"]
    page.locator("#cmd-identify").click()
    # The page refreshes itself while the command waits; the node acks it.
    page.locator("tr[data-op='identify'] .ack .ok").wait_for(timeout=60_000)
    assert "成功" in page.locator("tr[data-op='identify'] .ack").inner_text()
    commands = fed.api(f"/api/v1/devices/{fed.spare_device}/commands")
    assert commands[0]["op"] == "identify" and commands[0]["ok"] is True and commands[0]["acked"]
    # The school's live view now has the new node online in N1, as the API says.
    zh_page.goto(f"/schools/{fed.school_id}?week={fed.week}")
    device = fed.api(f"/api/v1/devices/{fed.spare_device}")
    shown = figures(page)
    expected_present = device["present"] if device["online"] else None
    assert shown[f"live.{fed.room_ids['N1']}"][0] == str(expected_present)
    assert num(shown["school.occupied_now"][0]) == (1 if expected_present else 0)


def test_no_page_requests_anything_outside_the_server_origin(fed, zh_page):
    paths = ["/", f"/schools/{fed.school_id}?week={fed.week}", f"/rooms/{fed.room_ids['C1']}?date={fed.day}",
             f"/regions/330000?date={fed.day}", f"/regions/330106?date={fed.day}", "/fleet",
             f"/fleet/devices/{fed.spare_device}"]
    for path in paths:
        zh_page.goto(path)
        zh_page.page.wait_for_load_state("networkidle")
    assert any(u.endswith("/static/dashboard.css") for u in zh_page.requests)
    assert all(u.startswith(fed.base_url) for u in zh_page.requests), zh_page.requests
    assert zh_page.foreign == []
