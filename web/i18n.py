"""The review site's words, in Chinese (the default) and English.

The language is the `lang` cookie (set by /lang/zh or /lang/en), else the browser's
Accept-Language when it prefers English, else Chinese.
"""

from __future__ import annotations

from collections.abc import Callable

LANGS = ("zh", "en")

M: dict[str, tuple[str, str]] = {
    "site": ("执法记录审查", "Enforcement record review"),
    "login": ("登录", "Log in"),
    "logout": ("退出", "Log out"),
    "username": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "login_failed": ("用户名或密码错误", "Wrong user name or password"),
    "locked": (
        "登录失败次数过多，账户已暂时锁定",
        "Too many failed logins: the account is locked for now",
    ),
    "throttled": (
        "此地址登录失败次数过多，请稍后再试",
        "Too many failed logins from this address: try later",
    ),
    "search": ("检索", "Search"),
    "exports": ("导出", "Exports"),
    "audits": ("审计", "Audits"),
    "overview": ("全县概览", "County overview"),
    "units": ("单位", "Units"),
    "officer": ("警号", "Officer number"),
    "recorder": ("执法记录仪", "Recorder"),
    "unit": ("单位", "Unit"),
    "case": ("案件", "Case"),
    "cases": ("案件", "Cases"),
    "category": ("类别", "Category"),
    "from": ("录制起", "Recorded from"),
    "to": ("录制止", "Recorded before"),
    "results": ("结果", "Results"),
    "no_results": ("没有符合条件的记录", "No recordings match"),
    "recorded": ("录制时间", "Recorded"),
    "captured": ("入库时间", "Docked"),
    "size": ("大小", "Size"),
    "file_name": ("文件名", "File name"),
    "page": ("页", "Page"),
    "next": ("下一页", "Next"),
    "prev": ("上一页", "Previous"),
    "recording": ("录像", "Recording"),
    "identity": ("身份信息", "Identity"),
    "storage": ("存储与锁定", "Storage and lock"),
    "store": ("存储位置", "Store"),
    "storage_class": ("存储类别", "Storage class"),
    "retain_until": ("锁定至", "Locked until"),
    "local": ("本机副本", "Copy on the dock"),
    "holds": ("冻结", "Holds"),
    "held": ("已冻结", "Held"),
    "none": ("无", "None"),
    "yes": ("是", "Yes"),
    "no": ("否", "No"),
    "verification": ("完整性验证", "Verification"),
    "verified": (
        "已验证：该记录包含在签名的日志检查点中",
        "Verified: the capture entry is in the signed checkpoint",
    ),
    "not_verified": ("未通过验证", "NOT verified"),
    "entry_index": ("入库条目", "Capture entry"),
    "tree_size": ("检查点大小", "Checkpoint size"),
    "root": ("根哈希", "Root hash"),
    "station_key": ("站点公钥", "Station key"),
    "witnesses": ("见证方", "Witnesses"),
    "no_witnesses": ("该检查点没有见证方联署", "No witness cosigned this checkpoint"),
    "quorum": ("见证法定数", "Witness quorum"),
    "entries": ("日志条目", "Log entries"),
    "viewers": ("查看记录", "Who has viewed it"),
    "time": ("时间", "Time"),
    "type": ("类型", "Type"),
    "user": ("用户", "User"),
    "role": ("角色", "Role"),
    "action": ("操作", "Action"),
    "client": ("地址", "Address"),
    "download_original": ("下载原始文件", "Download the original"),
    "no_access_copy": ("尚无播放副本，播放原始文件", "No access copy yet: playing the original"),
    "annotate": ("标注", "Annotate"),
    "remark": ("说明", "Remark"),
    "important": ("重要", "Important"),
    "save": ("保存", "Save"),
    "hold": ("冻结（禁止删除）", "Hold (nothing is deleted)"),
    "reason": ("理由", "Reason"),
    "request_export": ("申请导出", "Request an export"),
    "purpose": ("用途", "Purpose"),
    "request": ("提交申请", "Request"),
    "approve": ("批准", "Approve"),
    "state": ("状态", "State"),
    "requested_by": ("申请人", "Requested by"),
    "approved_by": ("批准人", "Approved by"),
    "download_bag": ("下载证据包 (zip)", "Download the bag (zip)"),
    "requested": ("待批准", "awaiting approval"),
    "building": ("生成中", "being built"),
    "ready": ("可下载", "ready"),
    "failed": ("失败", "failed"),
    "no_exports": ("没有导出申请", "No export requests"),
    "recordings": ("录像数", "Recordings"),
    "last_audit": ("最近审计", "Last audit"),
    "checked": ("已核对对象", "Objects checked"),
    "failures": ("问题", "Problems"),
    "alarms": ("告警", "Alarms"),
    "no_alarms": ("没有告警", "No alarms"),
    "no_audit": ("尚无审计", "No audit yet"),
    "station": ("站点", "Station"),
    "ok": ("正常", "ok"),
    "problems": ("问题", "Problems"),
    "forbidden": ("无权访问", "Not allowed"),
    "not_found": ("未找到", "Not found"),
    "bytes": ("字节", "bytes"),
    "language": ("English", "中文"),
    "all": ("全部", "All"),
    "admin_note": (
        "管理员仅管理用户，不查看录像。",
        "Administrators manage users; they do not see footage.",
    ),
    "users": ("用户", "Users"),
    "done": ("已记录", "Recorded"),
    "case_recordings": ("本案录像", "Recordings of this case"),
    "sha256": ("SHA-256", "SHA-256"),
    "media_type": ("媒体类型", "Media type"),
    "error": ("出错了", "Something went wrong"),
    "bad_request": ("请求有误", "Bad request"),
    "conflict": ("状态不允许", "Not in that state"),
    "active": ("启用", "active"),
    "disabled": ("停用", "disabled"),
    "hold_submit": ("冻结", "Hold"),
    "details": ("内容", "Details"),
    "at_station": (
        "标注、冻结和导出在保存录像的站点办理：县级平台只查看和核验。",
        "Annotations, holds and exports are made at the station that holds the recording: "
        "the county hub views and verifies.",
    ),
}

# What an access entry says was done, and the entry types a recording's page lists.
ACTIONS: dict[str, tuple[str, str]] = {
    "view": ("查看", "view"),
    "play": ("播放", "play"),
    "download": ("下载原始文件", "download"),
    "case_view": ("查看案件", "case view"),
    "export_request": ("申请导出", "export request"),
    "export_approve": ("批准导出", "export approval"),
    "export_download": ("下载证据包", "export download"),
    "login_failed": ("登录失败", "failed login"),
}
TYPES: dict[str, tuple[str, str]] = {
    "ingest": ("入库", "ingest"),
    "probe": ("媒体检查", "probe"),
    "fingerprint": ("指纹", "fingerprint"),
    "derive": ("生成副本", "derive"),
    "store": ("存入冷存储", "store"),
    "annotate": ("标注", "annotate"),
    "hold": ("冻结", "hold"),
    "hold_release": ("解除冻结", "hold release"),
    "lock": ("锁定", "lock"),
    "legal_hold": ("法律冻结", "legal hold"),
    "tier": ("转存", "tier move"),
    "delete": ("删除", "delete"),
    "export": ("导出", "export"),
    "access": ("访问", "access"),
    "note": ("备注", "note"),
    "wipe": ("清除记录仪", "wipe"),
    "sighting": ("再次发现", "sighting"),
}

CATEGORIES: dict[str, tuple[str, str]] = {
    "licensing": ("行政许可", "licensing"),
    "administrative_penalty": ("行政处罚", "administrative penalty"),
    "coercive_measure": ("行政强制", "coercive measure"),
    "expropriation": ("行政征收征用", "expropriation"),
    "inspection": ("行政检查", "inspection"),
    "other": ("其他", "other"),
}

ROLES: dict[str, tuple[str, str]] = {
    "reviewer": ("审核人员", "reviewer"),
    "supervisor": ("监督人员", "supervisor"),
    "admin": ("管理员", "administrator"),
}


def pick(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGS:
        return cookie
    first = (accept_language or "").split(",")[0].strip().lower()
    return "en" if first.startswith("en") else "zh"


def translator(lang: str) -> Callable[[str], str]:
    i = LANGS.index(lang) if lang in LANGS else 0

    def t(key: str) -> str:
        pair = (
            M.get(key)
            or CATEGORIES.get(key)
            or ROLES.get(key)
            or ACTIONS.get(key)
            or TYPES.get(key)
        )
        return pair[i] if pair else key

    return t
