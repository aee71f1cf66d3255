"""zh-CN / en labels of the OTA campaign views (fleet page section and campaign page);
merged into fleet_server.web.i18n.MESSAGES. key -> (en, zh-CN)."""
from __future__ import annotations

CAMPAIGN_MESSAGES: dict[str, tuple[str, str]] = {
    "campaigns": ("Firmware update campaigns", "固件升级任务"),
    "campaigns_tip": ("a release sent to the target in waves (e.g. 1 % -> 10 % -> 50 % -> 100 %); the next wave "
                      "starts only when the previous one has confirmed enough devices, and the campaign halts by "
                      "itself when failures exceed its limit",
                      "将固件版本按批次（如 1% → 10% → 50% → 100%）下发到目标设备；上一批确认成功的比例达标后才开始下一批，"
                      "失败超过上限时自动停止"),
    "campaign": ("Campaign", "升级任务"),
    "campaign_state": ("State", "状态"),
    "campaign_running": ("running", "进行中"),
    "campaign_paused": ("paused", "已暂停"),
    "campaign_halted": ("halted", "已自动停止"),
    "campaign_aborted": ("aborted", "已中止"),
    "campaign_completed": ("completed", "已完成"),
    "release": ("Release", "固件版本"),
    "wave": ("Wave", "批次"),
    "waves": ("Waves", "批次"),
    "wave_now": ("current wave", "当前批次"),
    "cumulative": ("cumulative share", "累计比例"),
    "devices_in_campaign": ("Devices", "设备数"),
    "success": ("Succeeded", "成功"),
    "failures": ("Failed", "失败"),
    "campaign_reason": ("Reason", "原因"),
    "campaign_policy": ("Policy", "策略"),
    "campaign_policy_text": ("next wave at >= {success} % confirmed; halt above {failures} % failed; "
                    "a device without a result after {timeout} h fails",
                    "本批确认成功 ≥ {success}% 才开始下一批；失败超过 {failures}% 自动停止；"
                    "下发 {timeout} 小时后仍无结果的设备记为失败"),
    "transitions": ("Every state change", "全部状态变化"),
    "transitions_tip": ("each step a node reported (downloading, verified, installed, confirmed, rolled back) "
                        "and each decision of the server, oldest first",
                        "节点上报的每一步（下载中、已校验、已安装、已确认、已回滚）以及服务器的每个决定，按时间先后"),
    "at": ("At", "时间"),
    "created_by": ("Started by", "发起人"),
    "pause": ("Pause", "暂停"),
    "resume": ("Resume", "继续"),
    "abort": ("Abort", "中止"),
    "no_campaigns": ("no campaigns yet", "暂无升级任务"),
    "download_pct": ("downloaded", "已下载"),
    "ota_pending": ("pending", "等待下发"),
    "ota_sent": ("sent", "已下发"),
    "ota_downloading": ("downloading", "下载中"),
    "ota_verified": ("verified", "已校验"),
    "ota_installed": ("installed", "已安装"),
    "ota_confirmed": ("confirmed", "已确认"),
    "ota_skipped": ("already on it", "无需升级"),
    "ota_rolled_back": ("rolled back", "已回滚"),
    "ota_failed": ("failed", "失败"),
    "ota_cancelled": ("cancelled", "已取消"),
    "ota_wave": ("next wave", "开始下一批"),
    "op_ota": ("Firmware update", "固件升级"),
}
