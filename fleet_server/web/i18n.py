"""Locale choice (?lang=, the `lang` cookie, then Accept-Language) and the zh-CN / en
catalogue with number, percent, date and time formatting in the school's time zone."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from fleet_server.web.i18n_campaigns import CAMPAIGN_MESSAGES

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"          # the users are in Zhejiang
COOKIE = "lang"
SHANGHAI = ZoneInfo("Asia/Shanghai")

# key -> (en, zh-CN). Keys are the English meaning in snake case.
MESSAGES: dict[str, tuple[str, str]] = {
    "app": ("CampusFleet", "CampusFleet 智慧校园"),
    "nav_home": ("Overview", "概览"),
    "nav_region": ("Province", "全省"),
    "nav_fleet": ("Devices", "设备"),
    "switch_to": ("中文", "English"),
    "switch_label": ("Language", "语言"),
    "csv": ("CSV", "CSV"),
    "csv_title": ("Download this figure as CSV", "下载此图表的 CSV 数据"),
    "how": ("How it is computed", "计算方法"),
    "not_available": ("not available yet", "暂未提供"),
    "no_data": ("no data", "无数据"),
    "none": ("none", "无"),
    "week": ("Week", "周"),
    "date": ("Date", "日期"),
    "show": ("Show", "查看"),
    "from_to": ("{first} to {last}", "{first} 至 {last}"),
    # home
    "home_title": ("Overview", "概览"),
    "schools_with_nodes": ("Schools with sensor nodes", "已安装传感节点的学校"),
    "devices_total": ("Devices", "设备数"),
    "devices_online": ("Online", "在线"),
    "devices_unassigned": ("Unassigned", "未分配"),
    # school
    "school": ("School", "学校"),
    "live_now": ("Today, live", "今日实时"),
    "occupied_now": ("Rooms occupied now", "当前有人的教室"),
    "occupied_now_tip": ("Rooms whose online node's latest presence event says present",
                         "在线节点最近一次存在事件为「有人」的教室数"),
    "rooms_with_node": ("Rooms with a node", "已装节点的教室"),
    "rooms_total": ("Rooms", "教室总数"),
    "utilisation": ("Utilisation", "使用率"),
    "utilisation_tip": ("Occupied minutes within school hours / available school-hours minutes",
                        "在校时段内有人分钟数 / 可用在校分钟数"),
    "school_utilisation_tip": ("Occupied minutes of rooms with data / (available minutes x rooms with data)",
                               "有数据教室的有人分钟数 / (可用分钟数 × 有数据教室数)"),
    "occupied_hours": ("Occupied hours", "有人小时数"),
    "rooms_ranked": ("Rooms ranked by utilisation", "教室使用率排名"),
    "rooms_ranked_tip": ("Rooms with data, highest utilisation first; then rooms without data",
                         "有数据的教室按使用率从高到低，其后为无数据教室"),
    "heatmap": ("Use by weekday and hour", "按星期与时段的使用情况"),
    "heatmap_tip": ("Per weekday and school-local hour over the range: occupied minutes / observed minutes",
                    "所选范围内每个星期几与本地小时：有人分钟数 / 有观测分钟数"),
    "no_shows": ("No-shows", "预约未使用"),
    "no_shows_tip": ("A booked period with occupied < 20% of it, or no presence in its first 10 minutes",
                     "已排课时段有人时间不足 20%，或前 10 分钟无人"),
    "unscheduled": ("Unscheduled use", "计划外使用"),
    "unscheduled_tip": (">= 10 consecutive occupied minutes outside every booked period",
                        "在所有排课时段之外连续有人 >= 10 分钟"),
    "minutes": ("min", "分钟"),
    "hours_unit": ("h", "小时"),
    "air_quality": ("Air quality by room", "各教室空气质量"),
    "air_quality_tip": ("Occupied minutes with window mean CO2 > 1000 / > 1500 ppm; share of occupied time "
                        "with temperature in 16-28 degC", "窗口平均 CO₂ > 1000 / > 1500 ppm 的有人分钟数；"
                        "温度在 16-28 °C 的有人时间占比"),
    "co2_mean": ("CO₂ mean", "CO₂ 均值"),
    "co2_max": ("CO₂ max", "CO₂ 最高"),
    "over_1000": ("> 1000 ppm", "> 1000 ppm"),
    "over_1500": ("> 1500 ppm", "> 1500 ppm"),
    "temp_in_band": ("Temp. in band", "温度达标"),
    "offline_nodes": ("Offline nodes", "离线节点"),
    "offline_tip": ("Online: last status online and a message within 3 windows; offline since the will "
                    "or the silence limit", "在线：最近状态为在线且 3 个窗口内有消息；离线时间自遗嘱消息或超时起算"),
    "room": ("Room", "教室"),
    "code": ("Code", "编号"),
    "type": ("Type", "类型"),
    "device": ("Device", "设备"),
    "state": ("State", "状态"),
    "since": ("Since", "自"),
    "online": ("online", "在线"),
    "offline": ("offline", "离线"),
    "present": ("occupied", "有人"),
    "vacant": ("vacant", "无人"),
    "unknown": ("unknown", "未知"),
    "data_completeness": ("Data completeness", "数据完整率"),
    "completeness_tip": ("Observed minutes / available minutes (windows received / expected)",
                         "有观测分钟数 / 可用分钟数（收到窗口数 / 应收窗口数）"),
    "completeness_today": ("Completeness today", "今日数据完整率"),
    "completeness_today_tip": ("Windows received / windows expected today (school-local day) for the time the "
                               "node was assigned to a room (since first seen if never assigned)",
                               "今日（学校本地日期）节点分配到教室期间：收到窗口数 / 应收窗口数（从未分配的节点自首次上线起算）"),
    "weekday_0": ("Mon", "周一"), "weekday_1": ("Tue", "周二"), "weekday_2": ("Wed", "周三"),
    "weekday_3": ("Thu", "周四"), "weekday_4": ("Fri", "周五"), "weekday_5": ("Sat", "周六"),
    "weekday_6": ("Sun", "周日"),
    "room_type_classroom": ("classroom", "普通教室"), "room_type_lab": ("lab", "实验室"),
    "room_type_library": ("library", "图书馆"), "room_type_computer_room": ("computer room", "计算机教室"),
    "room_type_art_music": ("art / music", "艺术/音乐教室"), "room_type_gym": ("gym", "体育馆"),
    "room_type_new_style": ("new-style space", "新型教学空间"),
    # room
    "room_day": ("The day in this room", "本教室当日情况"),
    "timeline_tip": ("Each node window (60 s): presence as reported, sensor means; bands are the DOMAIN.md "
                     "thresholds", "每个节点窗口（60 秒）：上报的存在状态与传感器均值；色带为阈值"),
    "presence": ("Presence", "存在"),
    "co2": ("CO₂", "CO₂"),
    "temperature": ("Temperature", "温度"),
    "light": ("Light (desk)", "照度（桌面）"),
    "noise": ("Noise", "噪声"),
    "notice": ("notice", "提示"),
    "breach": ("breach", "超标"),
    "band": ("band", "适宜区间"),
    "worst_hour": ("Worst hour (CO₂)", "CO₂ 最差时段"),
    "threshold": ("threshold", "阈值"),
    "environment_summary": ("Environment against the thresholds", "环境指标对照阈值"),
    "desk_lux_mean": ("Desk light mean", "桌面平均照度"),
    "below_300": ("< 300 lx", "< 300 lx"),
    "noise_unocc": ("Background noise (unoccupied)", "背景噪声（无人时）"),
    "periods": ("Booked periods", "排课时段"),
    # region
    "coverage": ("Smart-campus coverage", "智慧校园覆盖率"),
    "coverage_tip": ("Covered schools / schools with a school day in the period (schools without nodes count)",
                     "已覆盖学校数 / 期内有上课日的学校数（未装节点的学校也计入）"),
    "goal": ("goal", "目标"),
    "policy": ("Policy", "口径"),
    "policy_text": ("A school is covered on a school day when >= {inst} of its teaching spaces have a node "
                    "and >= {live} of those delivered >= {delivered} of their windows; covered for a week "
                    "on >= {days} school days. Goal: {goal} of schools.",
                    "学校某上课日覆盖：>= {inst} 的教学空间装有节点，且其中 >= {live} 的节点送达 >= {delivered} 的"
                    "窗口；一周内 >= {days} 个上课日覆盖即为该周覆盖。目标：{goal} 的学校。"),
    "schools": ("Schools", "学校数"),
    "covered": ("Covered", "已覆盖"),
    "gap_schools": ("Schools still needed", "尚需覆盖学校"),
    "gap_tip": ("More covered schools needed to reach the 95% goal", "达到 95% 目标还需覆盖的学校数"),
    "regions_ranked": ("Regions ranked by coverage", "下级地区覆盖率排名"),
    "regions_ranked_tip": ("Coverage of each child region; the line is the 95% goal",
                           "各下级地区的覆盖率；竖线为 95% 目标"),
    "uncovered": ("Uncovered schools", "未覆盖学校"),
    "uncovered_tip": ("Closest to qualifying first; the reason is the most frequent one over the school days",
                      "按距达标由近到远排列；原因为各上课日中最常见的原因"),
    "uncovered_shown": ("{total} uncovered; the {shown} closest to qualifying are listed, the CSV has every school.",
                        "共 {total} 所未覆盖；下表列出最接近达标的 {shown} 所，CSV 含全部学校。"),
    "reason": ("Reason", "原因"),
    "reason_not_enough_rooms_instrumented": ("not enough rooms instrumented", "装有节点的教室不足"),
    "reason_nodes_offline": ("nodes offline", "节点离线"),
    "reason_data_gaps": ("data gaps", "数据缺失"),
    "instrumented_share": ("Instrumented share", "装点率"),
    "live_share": ("Live share", "在线率"),
    "new_style": ("New-style teaching spaces live", "在用新型教学空间"),
    "new_style_tip": ("New-style spaces whose node was live (on enough days for a week), against the 1000 goal",
                      "节点在线（一周内天数达标）的新型教学空间数，对照 1000 间目标"),
    "trend": ("Coverage by week", "每周覆盖率趋势"),
    "trend_seam": ("The weekly trend appears here once GET /api/v1/coverage/trend is available.",
                   "待 GET /api/v1/coverage/trend 接入后在此显示每周趋势。"),
    "schools_in_county": ("Schools", "学校"),
    "level_province": ("province", "省"), "level_city": ("city", "市"), "level_county": ("county", "区县"),
    # fleet
    "fleet": ("Device fleet", "设备管理"),
    "devices": ("Devices", "设备列表"),
    "rssi": ("RSSI", "信号"),
    "heap": ("Free heap", "空闲内存"),
    "firmware": ("Firmware", "固件"),
    "firmware_spread": ("Firmware versions", "固件版本分布"),
    "firmware_spread_tip": ("devices per firmware version from their latest status (none: never sent one), "
                            "most common first, as GET /api/v1/devices/firmware gives it",
                            "按各设备最近一次状态上报的固件版本统计设备数（无：从未上报），按数量从多到少，"
                            "与 GET /api/v1/devices/firmware 一致"),
    "share": ("Share", "占比"),
    "sensors": ("Sensors", "传感器"),
    "last_seen": ("Last seen", "最近消息"),
    "unassigned": ("Unassigned devices", "未分配设备"),
    "assign": ("Assign", "分配"),
    "assign_to_room": ("Assign to a room", "分配到教室"),
    "choose_school": ("School", "学校"),
    "choose_room": ("Room", "教室"),
    "next": ("Next", "下一步"),
    "assigned_to": ("Room", "所在教室"),
    "commands": ("Commands", "指令"),
    "send": ("Send", "发送"),
    "op_identify": ("identify", "闪灯识别"), "op_sync": ("sync", "同步"), "op_reboot": ("reboot", "重启"),
    "sent": ("Sent", "发送时间"),
    "ack": ("Ack", "回执"),
    "ack_ok": ("ok", "成功"),
    "ack_failed": ("failed", "失败"),
    "ack_waiting": ("waiting for the node", "等待节点回执"),
    "sensor_ok": ("ok", "正常"), "sensor_missing": ("missing", "缺失"), "sensor_failed": ("failed", "故障"),
    "error": ("Error", "错误"),
    "page": ("Page", "页"),
    # The school page's open alerts and the region page's coverage trend (issue 5).
    "alerts_open": ("Open alerts", "未处理告警"),
    "alerts_open_tip": ("alerts of this school's rooms and nodes that still hold (a node offline for more than "
                        "30 minutes of school hours, a CO2 breach while occupied, a failed sensor), newest first, "
                        "as the alerts API lists them",
                        "本校教室和节点尚未解除的告警（上课时间离线超过 30 分钟、有人时 CO2 超标、传感器故障），"
                        "按时间倒序，与告警接口一致"),
    "alerts_shown": ("{shown} shown of {total}", "显示 {shown} 条，共 {total} 条"),
    "alert_kind": ("Alert", "告警"),
    "alert_kind_offline": ("node offline", "节点离线"),
    "alert_kind_co2_breach": ("CO2 breach", "CO2 超标"),
    "alert_kind_sensor_failed": ("sensor failed", "传感器故障"),
    "severity": ("Severity", "级别"),
    "severity_warning": ("warning", "警告"),
    "severity_critical": ("critical", "严重"),
    "opened_at": ("Since", "开始于"),
    "last_seen_at": ("Last seen", "最近出现"),
    "alert_detail": ("Detail", "详情"),
    "peak": ("peak", "峰值"),
    "trend_tip": ("the share of schools covered in each of the last {weeks} ISO weeks (a school counts for a "
                  "week when it is covered on at least {days} of its school days), from the coverage trend API",
                  "最近 {weeks} 个 ISO 周每周达标学校的比例（一周内至少 {days} 个上课日达标的学校计为该周覆盖），"
                  "数据来自覆盖趋势接口"),
}
assert not MESSAGES.keys() & CAMPAIGN_MESSAGES.keys(), "a campaign label would replace another"
MESSAGES.update(CAMPAIGN_MESSAGES)


def negotiate(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """?lang= wins, then the cookie, then the best Accept-Language match (RFC 9110
    q-values: `zh`, `zh-CN`, `zh-Hans` pick zh-CN; `en-*` picks en)."""
    for explicit in (query_lang, cookie_lang):
        if explicit in LOCALES:
            return explicit
    best, best_q = None, 0.0
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        tag = tag.strip().lower()
        locale = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        # Equal q: the earlier tag wins (a tiny decrement keeps the order).
        if locale and q - i * 1e-6 > best_q:
            best, best_q = locale, q - i * 1e-6
    return best or DEFAULT_LOCALE


@dataclass(frozen=True)
class Formatter:
    """Locale-aware text for one request: t() for labels, num/pct/dt for figures."""
    locale: str

    @property
    def zh(self) -> bool:
        return self.locale == "zh-CN"

    def t(self, key: str, **kw) -> str:
        en, zh = MESSAGES.get(key, (key, key))
        text = zh if self.zh else en
        return text.format(**kw) if kw else text

    def num(self, value: float | int | None, digits: int = 0) -> str:
        """Grouped digits (1,234.5): both locales group by thousands in figures."""
        if value is None:
            return "–"
        return f"{value:,.{digits}f}"

    def pct(self, share: float | None, digits: int = 1) -> str:
        if share is None:
            return "–"
        return f"{share * 100:.{digits}f}%"

    def minutes(self, value: float | None) -> str:
        return "–" if value is None else f"{self.num(value)} {self.t('minutes')}"

    def weekday(self, wd: int) -> str:
        return self.t(f"weekday_{wd}")

    def date(self, day: date | str | None) -> str:
        if day is None:
            return "–"
        if isinstance(day, str):
            day = date.fromisoformat(day[:10])
        if self.zh:
            return f"{day.year}年{day.month}月{day.day}日 {self.weekday(day.weekday())}"
        return f"{self.weekday(day.weekday())} {day.day} {day:%b} {day.year}"

    def dt(self, value: str | float | None, tz: ZoneInfo = SHANGHAI) -> str:
        """An ISO 8601 string or Unix seconds, shown in Asia/Shanghai."""
        if value is None:
            return "–"
        moment = (datetime.fromtimestamp(value, tz) if isinstance(value, (int, float))
                  else datetime.fromisoformat(value).astimezone(tz))
        return f"{self.date(moment.date())} {moment:%H:%M}"

    def time(self, value: str, tz: ZoneInfo = SHANGHAI) -> str:
        return datetime.fromisoformat(value).astimezone(tz).strftime("%H:%M")
