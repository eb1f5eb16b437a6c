"""Write the legacy CRM sample files that are not plain text: the contacts workbook and the
fixed-width opportunities export. Run it to regenerate them; the results are committed.

    .venv/bin/python -m scripts.make_sample_data
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "include" / "data" / "legacy_crm"

# 公司代码, 联系人编号, 姓, 名, 邮箱, 职位, 上级编号, 生日
CONTACTS = [
    ("A001", "01", "王", "芳", "wang.fang@huaxia.example.cn", "总经理", None, dt.date(1975, 4, 8)),
    ("A001", "02", "刘", "洋", "liu.yang@huaxia.example.cn", "采购经理", "01", dt.date(1986, 11, 23)),
    ("A001", "03", "陈", "静", "chen.jing@huaxia.example.cn", "采购专员", "02", dt.date(1992, 2, 29)),
    ("A002", "01", "赵", "磊", "zhao.lei@dongfang.example.cn", "董事长", None, dt.date(1968, 7, 1)),
    ("A002", "02", "孙", "丽", "sun.li@dongfang.example.cn", "财务总监", "01", None),
    ("A003", "01", "周", "杰", "zhou.jie@qianhai.example.cn", "副总裁", None, dt.date(1979, 12, 31)),
    # The company A404 is in no export and not in Salesforce: a missing parent.
    ("A404", "01", "吴", "敏", "wu.min@unknown.example.cn", "经理", None, dt.date(1990, 1, 1)),
    # No last name: Salesforce requires one, so the row is rejected with the field named.
    ("A003", "02", "", "强", "qiang@qianhai.example.cn", "助理", "01", dt.date(1995, 6, 15)),
    ("A005", "01", "郑", "华", "zheng.hua@tianfu.example.cn", "技术总监", None, dt.date(1983, 3, 3)),
]

# 商机编号(8) 客户编号(6) 商机名称(30 bytes) 阶段(8) 金额(12) 预计成交日期(8)
OPPORTUNITIES = [
    ("O0000001", "A001", "华夏科技云平台升级", "方案报价", "1250000.00", "20260315"),
    ("O0000002", "A001", "华夏科技运维服务", "赢单", "380000.00", "20251201"),
    ("O0000003", "A002", "东方贸易供应链系统", "需求分析", "2100000.00", "20260630"),
    ("O0000004", "A003", "前海金融风控咨询", "谈判", "960000.00", "20260131"),
    ("O0000005", "A004", "白云制造设备改造", "输单", "450000.00", "20250910"),
    # An unknown stage: the value_map rejects it.
    ("O0000006", "A005", "天府能源巡检项目", "暂停", "300000.00", "20260401"),
    ("O0000007", "A006", "西湖医疗数据平台", "初步接洽", "720000.00", "20261020"),
]
WIDTHS = (8, 6, 30, 8, 12, 8)
ENCODING = "gb18030"


def write_contacts(path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "联系人"
    sheet.append(["联系人导出 (旧CRM, 2025-12-31)"])  # a title row: the header is row 2
    sheet.append(["公司代码", "联系人编号", "姓", "名", "邮箱", "职位", "上级编号", "生日"])
    for row in CONTACTS:
        sheet.append(list(row))
    for cell in sheet["H"][2:]:
        cell.number_format = "yyyy-mm-dd"
    # Contact numbers are text in the old system ("01"), so keep Excel from turning them into 1.
    for column in ("B", "G"):
        for cell in sheet[column][2:]:
            cell.number_format = "@"
    book.save(path)


def write_opportunities(path: Path) -> None:
    lines = ["OPPORTUNITY EXPORT      LEGACY CRM      2025-12-31"]
    for values in OPPORTUNITIES:
        parts = []
        for value, width in zip(values, WIDTHS, strict=True):
            raw = value.encode(ENCODING)
            if len(raw) > width:
                raise ValueError(f"{value!r} is longer than {width} bytes")
            parts.append(raw + b" " * (width - len(raw)))
        lines.append(b"".join(parts).decode(ENCODING))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(ENCODING))


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    write_contacts(DATA / "contacts.xlsx")
    write_opportunities(DATA / "opportunities_gb18030.txt")
    print(f"wrote {DATA / 'contacts.xlsx'} and {DATA / 'opportunities_gb18030.txt'}")


if __name__ == "__main__":
    main()
