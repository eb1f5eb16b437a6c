"""Benchmark: accounts and their contacts into Salesforce (the emulator) at scale, against two baselines.

    .venv/bin/python bench/bench_scale.py [--rows 1000000] [--chunk-rows 100000] [--parallel 4]
        [--operation insert|upsert] [--xcom airflow|file] [--xcom-pull xcomarg|template]
        [--xcom-max-rows 2000000] [--xcom-max-rss-mb 8000] [--emulator-db auto|memory|file]
        [--skip-xcom | --only operator] [--report-only] [--keep]

`--rows N` is the total: N/2 accounts and N/2 contacts, each contact pointing at a random
account by its external id (`Account.Legacy_Id__c`). bench/README.md has the results and
the method; in short:

1. Generates seeded UTF-8 exports in the legacy shape (Chinese column names, codes to map,
   `2019/05/31` dates, 是/否 flags) and the same records already in Salesforce's shape (the
   baselines' input). Every row is valid: the point is the speed of loading, and at the
   end every row must be in Salesforce.
2. DMS: a two-object spec (upsert or insert on `Legacy_Id__c`, `before_images: false` as
   for an initial load) run task by task with the real operators: ExtractOperator per
   object, TransformOperator and LoadOperator per chunk, ReconcileOperator. Tasks are
   scheduled like the DAG (a contact load waits for every account load) on `--parallel`
   worker slots (default 4 on 2 cores: a load spends most of its time waiting for
   Salesforce, and a Celery worker runs 16 tasks at once by default; `--parallel 2` gives
   one slot per core); loads run non-deferrable, as on a worker without a triggerer,
   and use Bulk API 2.0 (every chunk is above `bulk_threshold`). Staging is a
   private redis-server started for the run, so its `used_memory_peak` is the run's alone.
3. Baseline (a): simple_salesforce `sf.bulk2.Account.insert(csv_file=...)`, then the contacts
   with their `Account.Legacy_Id__c` column: the prepared CSVs straight into Bulk API 2.0.
4. Baseline (b): Airflow's SalesforceBulkOperator (Bulk API 1.0) with its payload from XCom.
   `--xcom airflow` (default): per object a DAG `prepare >> bulk` (written into the work
   directory), where `prepare` returns the prepared CSV as a list of dicts and the operator
   takes it as `payload=prepare()` (or, `--xcom-pull template`, as
   `"{{ ti.xcom_pull(task_ids='prepare') }}"` with `render_template_as_native_obj`). Each DAG
   runs with `dag.test()` in a process of its own, on a fresh PostgreSQL database (dropped at
   the end): every task goes through the Task SDK, and the XComs through the execution API
   into the xcom table and back. If a size fails (memory above `--xcom-max-rss-mb`, the
   database, the API), the output says why and it runs at half the size. `--xcom file`: the
   XCom serialized as the task SDK does, into a file (a lower bound). Above `--xcom-max-rows`
   it runs at that size (the list of dicts needs GBs) and is compared by rate.
5. Each contender gets a fresh emulator (in memory, or a SQLite file above 2M rows), and is
   checked at the end: the emulator has exactly the generated accounts and contacts, and no
   contact without its account; for DMS also the reconcile identity.

Every task runs in a process of its own, forked from a fork server that has imported Airflow
and the libraries the operators use (as Airflow's supervisor forks a task process): its peak
RSS (VmHWM) is its own. The clock of a contender runs from its first task's start to its
last task's end; Airflow's own cost per task instance (scheduling, ~1.3-1.5 s per mapped task
on these machines, see ../shared/FACTS.md) is not in it, and is printed as an estimate.
Baseline (b) with `--xcom airflow` is the exception: its tasks run inside dag.test()'s
process, its clock is the sum over its two DAG runs of first task start to last task end
(the task instances' start_date and end_date in the metadata DB), and a task's peak RSS is
that process's VmHWM during the task (reset between tasks through /proc/self/clear_refs).

Targets (PASS/FAIL): DMS end to end <= 1.5x the raw bulk2 upload; DMS >= 5x faster than
SalesforceBulkOperator; peak RSS of every DMS task <= 400 MB (the target is set for 10M
rows; it is checked at every size). Exit 1 on a miss unless --report-only, and always when
a row is missing or duplicated in Salesforce.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from harness import ROOT, busy_cpu_seconds, process_peak_rss_mb, rate, start_private_redis

ORG = ROOT / "include" / "org" / "sample_org.yaml"
SEED = 20240601
STAGING_DB = 1  # a private server: the dms_staging default, never the broker's db 0
TARGET_VS_BULK2 = 1.5
TARGET_VS_OPERATOR = 5.0
TARGET_RSS_MB = 400
# Airflow's cost per task instance on these machines (FACTS.md), for the printed estimate only.
AIRFLOW_TASK_OVERHEAD_S = 1.4
# Above this many rows the emulator keeps its records in a SQLite file instead of memory.
EMULATOR_FILE_ABOVE = 2_000_000
BLOCK = 500_000  # rows generated at a time, so generating 10M rows stays within a few hundred MB
DMS_DAG_ID = "dms_bench_scale"
DMS_RUN_ID = "bench__scale"

ACCOUNT_HEADER = ["客户编号", "客户名称", "行业", "年收入", "员工人数", "建档日期", "是否有效", "城市"]
ACCOUNT_SF = [
    "Legacy_Id__c",
    "Name",
    "Industry",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Customer_Since__c",
    "Active__c",
    "BillingCity",
]
CONTACT_HEADER = ["联系人编号", "客户编号", "姓", "名", "邮箱", "职位", "生日"]
CONTACT_SF = ["Legacy_Id__c", "Account.Legacy_Id__c", "LastName", "FirstName", "Email", "Title", "Birthdate"]
INDUSTRIES = {"金融": "Finance", "制造": "Manufacturing", "零售": "Retail", "科技": "Technology", "能源": "Energy"}
CITIES = ["北京", "上海", "深圳", "广州", "成都", "杭州", "南京", "武汉", "西安", "重庆"]
WORDS = ["华夏", "东方", "长城", "鸿运", "金桥", "新源", "恒通", "瑞丰", "中联", "宏达"]
TRADES = ["科技", "制造", "贸易", "能源", "电子", "物流", "软件"]
SURNAMES = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"]
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰", "涛", "明"]
TITLES = ["经理", "总监", "采购", "财务", "工程师", "销售代表"]

SPEC = """\
# Written by bench/bench_scale.py: accounts and their contacts, as an initial load.
name: bench_scale
description: Generated accounts and contacts (bench_scale.py).
chunk_rows: {chunk_rows}
before_images: false
objects:
  - name: accounts
    sobject: Account
    operation: {operation}
    external_id: Legacy_Id__c
    source: {{kind: csv, path: bench_scale/accounts.csv, encoding: utf-8}}
    fields:
      Legacy_Id__c: {{source: 客户编号}}
      Name: {{source: 客户名称}}
      Industry: {{source: 行业, value_map: {industries}}}
      AnnualRevenue: {{source: 年收入, type: number}}
      NumberOfEmployees: {{source: 员工人数, type: integer}}
      Customer_Since__c: {{source: 建档日期, type: date, format: "%Y/%m/%d"}}
      Active__c: {{source: 是否有效, type: boolean, true_values: [是], false_values: [否]}}
      BillingCity: {{source: 城市}}
  - name: contacts
    sobject: Contact
    operation: {operation}
    external_id: Legacy_Id__c
    source: {{kind: csv, path: bench_scale/contacts.csv, encoding: utf-8}}
    fields:
      Legacy_Id__c: {{source: 联系人编号}}
      Account.Legacy_Id__c: {{source: 客户编号}}
      LastName: {{source: 姓}}
      FirstName: {{source: 名}}
      Email: {{source: 邮箱}}
      Title: {{source: 职位}}
      Birthdate: {{source: 生日, type: date}}
"""


# Baseline (b) as a user writes it, one DAG per object; `--xcom airflow` writes it into the work directory.
XCOM_DAG = """\
\"\"\"Written by bench/bench_scale.py: a prepared CSV into Salesforce with SalesforceBulkOperator, through XCom.

`prepare` returns the records as a list of dicts (its XCom); `bulk` takes them as `payload`.
\"\"\"

from __future__ import annotations

import pendulum
from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator
from airflow.sdk import dag, task

from scale_tasks import prepared_records

OBJECTS = {objects!r}
PULL = {pull!r}


def build(sobject: str, csv_path: str) -> None:
    @dag(
        dag_id="bench_xcom_" + sobject.lower(),
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        tags=["bench"],
        # A templated payload renders to a string unless Jinja returns native objects.
        render_template_as_native_obj=PULL == "template",
    )
    def load() -> None:
        @task(task_id="prepare")
        def prepare() -> list[dict]:
            return prepared_records(csv_path)

        prepared = prepare()
        bulk = SalesforceBulkOperator(
            task_id="bulk",
            operation={operation!r},
            object_name=sobject,
            payload=prepared if PULL == "xcomarg" else "{{{{ ti.xcom_pull(task_ids='prepare') }}}}",
            external_id_field={external_id!r},
            salesforce_conn_id="salesforce_default",
        )
        prepared >> bulk  # implied by the XComArg; a template needs it spelled out

    load()


@dag(dag_id="bench_xcom_warmup", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def warmup() -> None:
    # Run first in each dag.test process: the in-process API server's first requests cost seconds.
    @task
    def push() -> list[dict]:
        return [{{"Name": "warm-up"}}]

    @task
    def pull(payload: list[dict]) -> int:
        return len(payload)

    pull(push())


warmup()
for _sobject, _csv in sorted(OBJECTS.items()):
    build(_sobject, _csv)
"""


# ------------------------------------------------------------------ data


def split_rows(rows: int) -> tuple[int, int]:
    """Accounts and contacts of a run of `rows`: half each (the accounts get the odd one)."""
    accounts = (rows + 1) // 2
    return accounts, rows - accounts


def generate(data_dir: Path | None, prepared_dir: Path, rows: int, seed: int = SEED) -> tuple[int, int]:
    """Write the legacy exports (unless `data_dir` is None) and the prepared CSVs; return (accounts, contacts).

    Seeded per block, so the same `rows` always gives the same files; numpy draws the
    random parts and Python joins the lines, a block at a time.
    """
    import numpy as np

    n_accounts, n_contacts = split_rows(rows)
    outputs: list[Any] = []
    try:
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            legacy_accounts = (data_dir / "accounts.csv").open("w", encoding="utf-8", newline="")
            legacy_contacts = (data_dir / "contacts.csv").open("w", encoding="utf-8", newline="")
            outputs += [legacy_accounts, legacy_contacts]
            legacy_accounts.write(",".join(ACCOUNT_HEADER) + "\n")
            legacy_contacts.write(",".join(CONTACT_HEADER) + "\n")
        prepared_dir.mkdir(parents=True, exist_ok=True)
        sf_accounts = (prepared_dir / "accounts_sf.csv").open("w", encoding="utf-8", newline="")
        sf_contacts = (prepared_dir / "contacts_sf.csv").open("w", encoding="utf-8", newline="")
        outputs += [sf_accounts, sf_contacts]
        sf_accounts.write(",".join(ACCOUNT_SF) + "\n")
        sf_contacts.write(",".join(CONTACT_SF) + "\n")
        industry_codes = list(INDUSTRIES)
        industry_names = [INDUSTRIES[c] for c in industry_codes]
        for start in range(0, n_accounts, BLOCK):
            n = min(BLOCK, n_accounts - start)
            rng = np.random.default_rng([seed, 1, start])
            ids = [f"A{i:09d}" for i in range(start + 1, start + n + 1)]
            city = rng.integers(0, len(CITIES), n).tolist()
            word = rng.integers(0, len(WORDS), n).tolist()
            trade = rng.integers(0, len(TRADES), n).tolist()
            names = [
                f"{CITIES[c]}{WORDS[w]}{TRADES[t]}有限公司{i[1:]}"
                for c, w, t, i in zip(city, word, trade, ids, strict=True)
            ]
            industry = rng.integers(0, len(industry_codes), n).tolist()
            revenue = [f"{v / 100:.2f}" for v in rng.integers(10_000_00, 5_000_000_000_00, n).tolist()]
            employees = rng.integers(1, 50_000, n).astype(str).tolist()
            ymd = zip(
                rng.integers(1990, 2025, n).tolist(),
                rng.integers(1, 13, n).tolist(),
                rng.integers(1, 29, n).tolist(),
                strict=True,
            )
            dates = [(y, m, d) for y, m, d in ymd]
            active = (rng.random(n) < 0.8).tolist()
            cities = [CITIES[c] for c in city]
            if data_dir is not None:
                legacy_accounts.write(
                    "\n".join(
                        ",".join(r)
                        for r in zip(
                            ids,
                            names,
                            [industry_codes[k] for k in industry],
                            revenue,
                            employees,
                            [f"{y}/{m:02d}/{d:02d}" for y, m, d in dates],
                            ["是" if a else "否" for a in active],
                            cities,
                            strict=True,
                        )
                    )
                    + "\n"
                )
            sf_accounts.write(
                "\n".join(
                    ",".join(r)
                    for r in zip(
                        ids,
                        names,
                        [industry_names[k] for k in industry],
                        revenue,
                        employees,
                        [f"{y}-{m:02d}-{d:02d}" for y, m, d in dates],
                        ["true" if a else "false" for a in active],
                        cities,
                        strict=True,
                    )
                )
                + "\n"
            )
        for start in range(0, n_contacts, BLOCK):
            n = min(BLOCK, n_contacts - start)
            rng = np.random.default_rng([seed, 2, start])
            ids = [f"P{i:09d}" for i in range(start + 1, start + n + 1)]
            account = [f"A{i + 1:09d}" for i in rng.integers(0, n_accounts, n).tolist()]
            last = [SURNAMES[k] for k in rng.integers(0, len(SURNAMES), n).tolist()]
            first = [GIVEN[k] for k in rng.integers(0, len(GIVEN), n).tolist()]
            emails = [f"{i.lower()}@example.com" for i in ids]
            titles = [TITLES[k] for k in rng.integers(0, len(TITLES), n).tolist()]
            birth = [
                f"{y}-{m:02d}-{d:02d}"
                for y, m, d in zip(
                    rng.integers(1950, 2003, n).tolist(),
                    rng.integers(1, 13, n).tolist(),
                    rng.integers(1, 29, n).tolist(),
                    strict=True,
                )
            ]
            lines = "\n".join(",".join(r) for r in zip(ids, account, last, first, emails, titles, birth, strict=True))
            if data_dir is not None:
                legacy_contacts.write(lines + "\n")
            sf_contacts.write(lines + "\n")
    finally:
        for handle in outputs:
            handle.close()
    return n_accounts, n_contacts


# ------------------------------------------------------------------ tasks, forked and scheduled


@dataclass
class TaskRun:
    """One task's figures: when it ran (seconds from its contender's start) and what it used."""

    name: str
    phase: str
    start: float
    end: float
    seconds: float  # execute() only
    cpu: float
    peak_rss_mb: float
    output: Any
    startup: float = 0.0  # fork to execute(): the process, the spec, the operator


@dataclass
class Node:
    name: str
    phase: str
    spec: dict[str, Any]
    ready: Callable[[], bool]
    priority: tuple[int, ...]


PHASE_ORDER = {"load": 0, "transform": 1, "extract": 2, "reconcile": 3}


class Scheduler:
    """Runs nodes on `slots` worker slots as their dependencies finish, each in a forked process."""

    def __init__(self, ctx: Any, slots: int, log: Path) -> None:
        self.ctx = ctx
        self.slots = slots
        self.log = log
        self.nodes: list[Node] = []
        self.done: dict[str, TaskRun] = {}
        self.running: dict[Any, tuple[Node, Any, float]] = {}  # pipe -> node, process, start
        self.on_done: Callable[[TaskRun], None] = lambda run: None

    def add(self, node: Node) -> None:
        self.nodes.append(node)

    def run(self) -> tuple[float, list[TaskRun]]:
        import scale_tasks

        running = self.running
        begin = time.perf_counter()
        try:
            while self.nodes or running:
                ready = sorted((n for n in self.nodes if n.ready()), key=lambda n: n.priority)
                for node in ready[: self.slots - len(running)]:
                    self.nodes.remove(node)
                    parent, child = self.ctx.Pipe(duplex=False)
                    process = self.ctx.Process(
                        target=scale_tasks.run_task, args=({**node.spec, "log": str(self.log)}, child), name=node.name
                    )
                    process.start()
                    child.close()
                    running[parent] = (node, process, time.perf_counter())
                if not running:
                    stuck = ", ".join(n.name for n in self.nodes)
                    raise RuntimeError(f"no task can start: {stuck}")
                for pipe in wait_any(list(running)):
                    node, process, started = running.pop(pipe)  # type: ignore[call-overload]
                    try:
                        message = pipe.recv()
                    except EOFError:
                        message = {"error": f"the process died with exit code {process.exitcode}"}
                    process.join()
                    if "error" in message:
                        tail = self.log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"task {node.name} failed:\n{message['error']}\nlog tail:\n{tail}")
                    task = TaskRun(
                        node.name,
                        node.phase,
                        started - begin,
                        time.perf_counter() - begin,
                        message["seconds"],
                        message["cpu"],
                        message["peak_rss_mb"],
                        message["output"],
                        message["began"] - started,
                    )
                    self.done[node.name] = task
                    self.on_done(task)
        finally:
            for _, process, _ in running.values():
                process.kill()
                process.join()
        return time.perf_counter() - begin, sorted(self.done.values(), key=lambda t: t.start)


@dataclass
class Contender:
    """One way of loading the data, its wall time, its tasks and what the services used."""

    name: str
    rows: int
    wall: float = 0.0
    tasks: list[TaskRun] = field(default_factory=list)
    busy_cores: float = 0.0
    emulator_peak_mb: float | None = None
    checks: list[str] = field(default_factory=list)  # failed correctness checks
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ services


class Services:
    """The audit store (for DMS), the CA, and a fresh emulator (and Redis) per contender."""

    def __init__(self, workdir: Path, emulator_db: bool) -> None:
        from salesforce_emulator.tls import ensure_certificates
        from scripts.audit_server import start_audit_server

        self.workdir = workdir
        self.emulator_db = emulator_db
        self.cert_dir = workdir / "certs"
        ensure_certificates(self.cert_dir)
        self.audit = start_audit_server(data_dir=workdir / "audit")

    def emulator(self, name: str) -> Any:
        from scripts.services import start_emulator

        extra: tuple[str, ...] = ()
        if self.emulator_db:
            extra = ("--db", str(self.workdir / f"emulator-{name}.sqlite"))
        return start_emulator(ORG, cert_dir=self.cert_dir, extra_args=extra)

    def env(self, emulator: Any, redis_server: Any | None) -> dict[str, str]:
        salesforce = emulator.salesforce_connection()
        # The provider's SalesforceHook logs in at https://{domain}.salesforce.com/...: the
        # fragment turns the fixed suffix into something never sent (see README).
        salesforce["extra"]["domain"] = f"127.0.0.1:{emulator.port}/services/oauth2/token#"
        env = {
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps(salesforce),
            "AIRFLOW_CONN_CLOUDANT_DEFAULT": json.dumps({"conn_type": "cloudant", "host": self.audit.url}),
        }
        if redis_server is not None:
            env["AIRFLOW_CONN_DMS_STAGING"] = json.dumps(
                {
                    "conn_type": "redis",
                    "host": redis_server.host,
                    "port": redis_server.port,
                    "extra": {"db": STAGING_DB},
                }
            )
        return env

    def stop(self) -> None:
        self.audit.stop()


def verify_org(emulator: Any, accounts: int, contacts: int) -> list[str]:
    """What is wrong with the org after a load of `accounts` and `contacts` (nothing: an empty list)."""
    from simple_salesforce import Salesforce

    token = emulator.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")

    def count(soql: str) -> int:
        return int(sf.query(soql)["totalSize"])

    problems = []
    found = {"Account": count("SELECT COUNT() FROM Account"), "Contact": count("SELECT COUNT() FROM Contact")}
    for sobject, expected in (("Account", accounts), ("Contact", contacts)):
        if found[sobject] != expected:
            problems.append(f"{sobject}: {found[sobject]:,} records in the org, {expected:,} generated")
    orphans = count("SELECT COUNT() FROM Contact WHERE AccountId = null")
    if orphans:
        problems.append(f"Contact: {orphans:,} records without their AccountId")
    # Legacy_Id__c is unique in the org's schema, so equal counts also mean no key was loaded twice;
    # the first and last generated keys must be there.
    for sobject, prefix, n in (("Account", "A", accounts), ("Contact", "P", contacts)):
        if n:
            keys = f"'{prefix}{1:09d}', '{prefix}{n:09d}'"
            if count(f"SELECT COUNT() FROM {sobject} WHERE Legacy_Id__c IN ({keys})") != min(n, 2):
                problems.append(f"{sobject}: the first or last generated key is missing")
    return problems


def _measured(contender: Contender, emulator: Any, run: Callable[[], None]) -> None:
    busy = -busy_cpu_seconds()
    run()
    busy += busy_cpu_seconds()
    contender.busy_cores = busy / contender.wall if contender.wall else 0.0
    contender.emulator_peak_mb = process_peak_rss_mb(emulator.process.pid)


# ------------------------------------------------------------------ contenders


def run_dms(
    args: argparse.Namespace, ctx: Any, services: Services, workdir: Path, counts: tuple[int, int]
) -> Contender:
    import redis

    contender = Contender("DMS", args.rows)
    spec_file = workdir / "bench_scale.yaml"
    industries = "{" + ", ".join(f"{k}: {v}" for k, v in INDUSTRIES.items()) + "}"
    spec_file.write_text(
        SPEC.format(chunk_rows=args.chunk_rows, operation=args.operation, industries=industries), encoding="utf-8"
    )
    redis_server = start_private_redis(workdir, "redis-dms")
    emulator = services.emulator("dms")
    try:
        base = {
            "env": services.env(emulator, redis_server),
            "spec_file": str(spec_file),
            "dag_id": DMS_DAG_ID,
            "run_id": DMS_RUN_ID,
            "chunk_rows": args.chunk_rows,
        }
        scheduler = Scheduler(ctx, args.parallel, workdir / "tasks-dms.log")
        objects = ["accounts", "contacts"]
        refs: dict[str, list[dict[str, Any]]] = {}

        def finished(name: str) -> bool:
            return name in scheduler.done

        def all_finished(prefix: str) -> bool:
            pending = [n for n in scheduler.nodes if n.name.startswith(prefix)]
            return not pending and all(finished(n) for n in scheduler.done if n.startswith(prefix))

        def on_done(task: TaskRun) -> None:
            # Dynamic task mapping: the chunks are known once the extract returns them.
            if task.phase != "extract":
                if task.phase == "transform":
                    obj, chunk = task.output["object"], task.output["chunk"]
                    load = next(n for n in scheduler.nodes if n.name == f"{obj}.load[{chunk}]")
                    load.spec["chunk"] = task.output
                return
            obj = task.name.split(".")[0]
            refs[obj] = task.output
            rank = objects.index(obj)
            for ref in task.output:
                chunk = int(ref["chunk"])
                transform_name = f"{obj}.transform[{chunk}]"
                scheduler.add(
                    Node(
                        transform_name,
                        "transform",
                        {**base, "kind": "transform", "object": obj, "chunk": ref},
                        lambda: True,
                        (PHASE_ORDER["transform"], rank, chunk),
                    )
                )
                if obj == "contacts":
                    # The DAG's `load_tasks[parent] >> load`: every account load first.
                    def ready(t: str = transform_name) -> bool:
                        return finished(t) and finished("accounts.extract") and all_finished("accounts.load")
                else:

                    def ready(t: str = transform_name) -> bool:
                        return finished(t)

                scheduler.add(
                    Node(
                        f"{obj}.load[{chunk}]",
                        "load",
                        {**base, "kind": "load", "object": obj, "chunk": None},
                        ready,
                        (PHASE_ORDER["load"], rank, chunk),
                    )
                )

        scheduler.on_done = on_done
        for rank, obj in enumerate(objects):
            scheduler.add(
                Node(
                    f"{obj}.extract",
                    "extract",
                    {**base, "kind": "extract", "object": obj},
                    lambda: True,
                    (PHASE_ORDER["extract"], rank),
                )
            )

        def reconcile_ready() -> bool:
            return (
                len(scheduler.nodes) == 1
                and not scheduler.running
                and all(f"{o}.extract" in scheduler.done for o in objects)
            )

        def reconcile_spec() -> dict[str, Any]:
            done = scheduler.done.values()

            def outputs(phase: str, obj: str) -> list[Any]:
                return [t.output for t in done if t.phase == phase and t.name.startswith(obj + ".")]

            return {
                **base,
                "kind": "reconcile",
                "extracts": {o: refs.get(o) for o in objects},
                "transforms": {o: outputs("transform", o) for o in objects},
                "loads": {o: outputs("load", o) for o in objects},
            }

        reconcile = Node("reconcile", "reconcile", {}, reconcile_ready, (PHASE_ORDER["reconcile"],))

        # The reconcile's arguments are its upstream XComs, known only when it can start.
        def ready_and_filled() -> bool:
            if not reconcile_ready():
                return False
            reconcile.spec = reconcile_spec()
            return True

        reconcile.ready = ready_and_filled
        scheduler.add(reconcile)

        def go() -> None:
            contender.wall, contender.tasks = scheduler.run()

        _measured(contender, emulator, go)
        client = redis.Redis(host=redis_server.host, port=redis_server.port, db=STAGING_DB)
        info = client.info("memory")
        contender.extra["redis_peak_mb"] = info["used_memory_peak"] / 1e6
        contender.extra["redis_end_mb"] = info["used_memory"] / 1e6
        contender.extra["redis_rss_peak_mb"] = process_peak_rss_mb(redis_server.process.pid)
        summary = next(t.output for t in contender.tasks if t.phase == "reconcile")
        contender.extra["reconcile"] = summary
        for obj, expected in zip(objects, counts, strict=True):
            c = summary[obj]
            if not (c["source"] == c["loaded"] == expected and c["rejected"] == 0 and c["failed"] == 0):
                contender.checks.append(f"reconcile {obj}: {c} (expected {expected:,} source rows, all loaded)")
        apis = {
            t.output.get("api", "bulk2" if t.output.get("job_id") else "?")
            for t in contender.tasks
            if t.phase == "load"
        }
        contender.extra["load_apis"] = sorted(str(a) for a in apis)
        contender.checks += verify_org(emulator, *counts)
    finally:
        emulator.stop()
        redis_server.stop()
    return contender


def run_bulk2(
    args: argparse.Namespace, ctx: Any, services: Services, prepared: Path, counts: tuple[int, int]
) -> Contender:
    contender = Contender("raw bulk2", args.rows)
    emulator = services.emulator("bulk2")
    try:
        scheduler = Scheduler(ctx, 1, services.workdir / "tasks-bulk2.log")
        base = {"env": services.env(emulator, None), "kind": "bulk2", "operation": args.operation}
        token = emulator.token()
        scheduler.add(
            Node(
                "Account",
                "bulk2",
                {**base, "sobject": "Account", "csv": str(prepared / "accounts_sf.csv"), "token": token},
                lambda: True,
                (0,),
            )
        )
        scheduler.add(
            Node(
                "Contact",
                "bulk2",
                {**base, "sobject": "Contact", "csv": str(prepared / "contacts_sf.csv"), "token": token},
                lambda: "Account" in scheduler.done,
                (1,),
            )
        )

        def go() -> None:
            contender.wall, contender.tasks = scheduler.run()

        _measured(contender, emulator, go)
        for task, expected in zip(contender.tasks, counts, strict=True):
            if task.output["processed"] != expected or task.output["failed"]:
                contender.checks.append(f"bulk2 {task.name}: {task.output} (expected {expected:,} processed)")
        contender.checks += verify_org(emulator, *counts)
    finally:
        emulator.stop()
    return contender


def run_operator_file(args: argparse.Namespace, ctx: Any, services: Services, workdir: Path) -> Contender:
    """Baseline (b), `--xcom file`: the XCom serialized as the task SDK does, into a file (a lower bound)."""
    rows = min(args.rows, args.xcom_max_rows)
    contender = Contender("SalesforceBulkOperator", rows)
    prepared = workdir / "prepared"
    if rows != args.rows:
        prepared = workdir / f"prepared-{rows}"
        generate(None, prepared, rows, args.seed)
    counts = split_rows(rows)
    emulator = services.emulator("operator")
    try:
        scheduler = Scheduler(ctx, 1, workdir / "tasks-operator.log")
        base = {"env": services.env(emulator, None), "operation": args.operation}
        previous = ""
        for sobject, csv_name in (("Account", "accounts_sf.csv"), ("Contact", "contacts_sf.csv")):
            xcom = str(workdir / f"xcom-{sobject}.json")
            spec = {**base, "sobject": sobject, "csv": str(prepared / csv_name), "xcom": xcom}
            after = previous
            scheduler.add(
                Node(
                    f"{sobject}.prepare",
                    "xcom_prepare",
                    {**spec, "kind": "xcom_prepare"},
                    lambda after=after: not after or after in scheduler.done,
                    (len(scheduler.nodes),),
                )
            )
            scheduler.add(
                Node(
                    f"{sobject}.bulk",
                    "bulk_operator",
                    {**spec, "kind": "bulk_operator"},
                    lambda s=sobject: f"{s}.prepare" in scheduler.done,
                    (len(scheduler.nodes),),
                )
            )
            previous = f"{sobject}.bulk"

        def go() -> None:
            contender.wall, contender.tasks = scheduler.run()

        _measured(contender, emulator, go)
        bulks = [t for t in contender.tasks if t.phase == "bulk_operator"]
        for task, expected in zip(bulks, counts, strict=True):
            if task.output["success"] != expected:
                contender.checks.append(f"operator {task.name}: {task.output} (expected {expected:,} successes)")
        contender.checks += verify_org(emulator, *counts)
    finally:
        emulator.stop()
        for sobject in ("Account", "Contact"):
            Path(workdir / f"xcom-{sobject}.json").unlink(missing_ok=True)
    return contender


class XComPathFailed(Exception):
    """The SalesforceBulkOperator DAG could not run at this size; the message says what failed."""


class MetadataDb:
    """A fresh PostgreSQL database for the Airflow of baseline (b), `airflow db migrate`d; dropped by close()."""

    def __init__(self, workdir: Path, log: Path) -> None:
        from scripts.services import ensure_postgres

        self.server = ensure_postgres()
        self.name = f"dms_bench_xcom_{uuid.uuid4().hex[:10]}"
        self.home = workdir / "airflow-xcom"
        self.dags = self.home / "dags"
        self.dags.mkdir(parents=True)
        (self.home / "plugins").mkdir()
        self.server.admin(f'CREATE DATABASE "{self.name}"')
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://postgres@{self.server.host}:{self.server.port}/{self.name}"
            ),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            # A plain Airflow: none of DMS's plugins.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.home / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        began = time.perf_counter()
        with log.open("ab") as out:
            migrate = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        if migrate.returncode:
            self.close()
            raise RuntimeError(f"airflow db migrate failed (exit {migrate.returncode}): see {log}")
        self.migrate_seconds = time.perf_counter() - began

    def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host=self.server.host, port=self.server.port, user="postgres", dbname=self.name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def close(self) -> None:
        # WITH (FORCE): a dag.test process killed by the memory guard may have left a session open.
        self.server.admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.server.stop()


def _dag_test(dag_file: Path, dag_id: str, env: dict[str, str], log: Path, max_rss_mb: int) -> dict:
    """Run one DAG with dag.test() in a process of its own (scale_tasks.py dag-test); kill it above `max_rss_mb`."""
    out = log.parent / f"{dag_id}.json"
    out.unlink(missing_ok=True)
    script = Path(__file__).resolve().parent / "scale_tasks.py"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, str(script), "dag-test", str(dag_file), dag_id, str(out)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    peak = 0.0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
                rss = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)
        except OSError:
            rss = 0.0
        peak = max(peak, rss)
        if rss > max_rss_mb:
            process.kill()
            process.wait()
            raise XComPathFailed(
                f"{dag_id}: the dag.test process reached {rss:,.0f} MB RSS, above --xcom-max-rss-mb "
                f"{max_rss_mb:,}; killed"
            )
        time.sleep(0.2)
    result = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
    if result is not None:
        errors = [f"{task}: {t['error']}" for task, t in result["tasks"].items() if t.get("error")]
        if errors or result["state"] != "success":
            raise XComPathFailed(f"{dag_id}: run {result['state']}; " + "; ".join(errors))
        return result
    tail = log.read_text(errors="replace")[-2000:]
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    how = f"was killed by signal {-process.returncode}" if process.returncode < 0 else f"exited {process.returncode}"
    raise XComPathFailed(
        f"{dag_id}: the dag.test process {how} (peak RSS seen {peak:,.0f} MB): {last}\nlog tail:\n{tail}"
    )


def _operator_attempt(
    args: argparse.Namespace, services: Services, workdir: Path, db: MetadataDb, rows: int
) -> Contender:
    """Baseline (b) at `rows`, `--xcom airflow`: the accounts DAG, then the contacts DAG, each with dag.test()."""
    from datetime import datetime

    contender = Contender("SalesforceBulkOperator", rows)
    prepared = workdir / "prepared"
    if rows != args.rows:
        prepared = workdir / f"prepared-{rows}"
        if not prepared.exists():
            generate(None, prepared, rows, args.seed)
    counts = split_rows(rows)
    log = workdir / "tasks-operator.log"
    emulator = services.emulator(f"operator-{rows}")
    try:
        objects = {"Account": str(prepared / "accounts_sf.csv"), "Contact": str(prepared / "contacts_sf.csv")}
        dag_file = db.dags / "bench_xcom.py"
        dag_file.write_text(
            XCOM_DAG.format(
                objects=objects,
                pull=args.xcom_pull,
                operation=args.operation,
                external_id="Legacy_Id__c" if args.operation == "upsert" else "Id",
            ),
            encoding="utf-8",
        )
        env = {**db.env, **services.env(emulator, None)}
        busy = -busy_cpu_seconds()
        elapsed = -time.perf_counter()
        runs = {}
        for sobject in objects:  # contacts after accounts: their parents must exist
            runs[sobject] = _dag_test(dag_file, f"bench_xcom_{sobject.lower()}", env, log, args.xcom_max_rss_mb)
        elapsed += time.perf_counter()
        busy += busy_cpu_seconds()
        contender.busy_cores = busy / elapsed
        contender.emulator_peak_mb = process_peak_rss_mb(emulator.process.pid)

        origin: datetime | None = None
        xcom: dict[str, dict[str, float]] = {}
        for (sobject, run), expected in zip(runs.items(), counts, strict=True):
            dag_id = f"bench_xcom_{sobject.lower()}"
            instances = db.query(
                "SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id = %s AND run_id = %s"
                " ORDER BY start_date",
                (dag_id, run["run_id"]),
            )
            sizes = {
                task_id: (stored, text)
                for task_id, stored, text in db.query(
                    "SELECT task_id, pg_column_size(value), octet_length(value::text) FROM xcom"
                    " WHERE dag_id = %s AND run_id = %s AND key = 'return_value'",
                    (dag_id, run["run_id"]),
                )
            }
            [(success, results)] = db.query(
                "SELECT count(*) FILTER (WHERE (e ->> 'success')::boolean), count(*)"
                " FROM xcom CROSS JOIN LATERAL jsonb_array_elements(value) AS e"
                " WHERE dag_id = %s AND run_id = %s AND task_id = 'bulk' AND key = 'return_value'",
                (dag_id, run["run_id"]),
            )
            origin = origin or instances[0][1]
            first, last = instances[0][1], max(end for _, _, end in instances)
            contender.wall += (last - first).total_seconds()
            for task_id, start, end in instances:
                stored, text = sizes.get(task_id, (0, 0))
                xcom[f"{sobject}.{task_id}"] = {"stored_mb": stored / 1e6, "json_mb": text / 1e6}
                output: dict[str, Any] = {"xcom_mb": text / 1e6, "xcom_stored_mb": stored / 1e6}
                if task_id == "bulk":
                    output.update(records=int(results), success=int(success), failed=int(results - success))
                metered = run["tasks"][task_id]
                contender.tasks.append(
                    TaskRun(
                        f"{sobject}.{task_id}",
                        "bulk_operator" if task_id == "bulk" else "xcom_prepare",
                        (start - origin).total_seconds(),
                        (end - origin).total_seconds(),
                        (end - start).total_seconds(),
                        metered["cpu"],
                        metered["peak_rss_mb"],
                        output,
                    )
                )
            bulk = next(t for t in contender.tasks if t.name == f"{sobject}.bulk")
            if bulk.output["success"] != expected or bulk.output["records"] != expected:
                contender.checks.append(f"operator {bulk.name}: {bulk.output} (expected {expected:,} successes)")
        contender.extra.update(
            xcom_mode="airflow",
            xcom_pull=args.xcom_pull,
            xcom=xcom,
            dag_test_seconds={s: r["seconds"] for s, r in runs.items()},
            dag_test_peak_rss_mb={s: r["process_peak_rss_mb"] for s, r in runs.items()},
            db_migrate_seconds=db.migrate_seconds,
        )
        contender.checks += verify_org(emulator, *counts)
    finally:
        emulator.stop()
    return contender


def run_operator_airflow(args: argparse.Namespace, services: Services, workdir: Path) -> Contender:
    """Baseline (b), `--xcom airflow`: SalesforceBulkOperator DAGs run by dag.test() on PostgreSQL.

    If a size fails (memory, the database, the API), the failure is kept for the report and
    the run is retried at half the size, down to --xcom-min-rows.
    """
    db = MetadataDb(workdir, workdir / "tasks-operator.log")
    failures: list[str] = []
    try:
        rows = min(args.rows, args.xcom_max_rows)
        while True:
            try:
                contender = _operator_attempt(args, services, workdir, db, rows)
                break
            except XComPathFailed as failure:
                failures.append(f"at {rows:,} rows: {failure}")
                print(f"SalesforceBulkOperator through Airflow's XCom failed at {rows:,} rows: {failure}", flush=True)
                if rows // 2 < args.xcom_min_rows:
                    raise
                rows //= 2
    finally:
        db.close()
    contender.extra["xcom_failures"] = failures
    return contender


def run_operator(args: argparse.Namespace, ctx: Any, services: Services, workdir: Path) -> Contender:
    if args.xcom == "file":
        return run_operator_file(args, ctx, services, workdir)
    return run_operator_airflow(args, services, workdir)


# ------------------------------------------------------------------ report


def _phase_line(rows: int, tasks: list[TaskRun], label: str) -> str:
    span = max(t.end for t in tasks) - min(t.start for t in tasks)
    busy = sum(t.seconds for t in tasks)
    peak = max(t.peak_rss_mb for t in tasks)
    return f"  {label:<28}{rate(rows, span)}  {len(tasks):4d} tasks, {busy:7.1f} task-s, peak RSS {peak:4.0f} MB"


def _dms_section(args: argparse.Namespace, dms: Contender, counts: tuple[int, int]) -> None:
    rows = args.rows
    print("DMS per phase (rows/s over the phase's span, first start to last end; phases overlap):")
    for phase in ("extract", "transform", "load", "reconcile"):
        tasks = [t for t in dms.tasks if t.phase == phase]
        print(_phase_line(rows, tasks, phase))
        if phase in ("transform", "load"):
            for obj, n in zip(("accounts", "contacts"), counts, strict=True):
                mine = [t for t in tasks if t.name.startswith(obj + ".")]
                print(_phase_line(n, mine, f"  {phase} {obj}"))
    n_tasks = len(dms.tasks)
    overhead = n_tasks * AIRFLOW_TASK_OVERHEAD_S / args.parallel
    print(
        f"  Airflow's per-task cost, estimated: {n_tasks} tasks x {AIRFLOW_TASK_OVERHEAD_S} s / {args.parallel} slots "
        f"= {overhead:.0f} s more, i.e. ~{rows / (dms.wall + overhead):,.0f} rows/s under a scheduler"
    )
    print(
        f"  Redis (private server): used_memory_peak {dms.extra['redis_peak_mb']:,.0f} MB, "
        f"{dms.extra['redis_end_mb']:,.0f} MB still staged at the end (TTL), "
        f"server peak RSS {dms.extra['redis_rss_peak_mb'] or 0:,.0f} MB"
    )
    print(f"  load APIs used: {', '.join(dms.extra['load_apis'])}")
    startups = [t.startup for t in dms.tasks]
    print(f"  fork to execute() per task: {min(startups):.2f}-{max(startups):.2f} s")
    print()


def _operator_section(args: argparse.Namespace, operator: Contender | None, error: str | None) -> None:
    if args.xcom == "file":
        if operator is not None:
            print(
                "SalesforceBulkOperator (--xcom file): XCom serialized as the task SDK does, into a file; "
                "the supervisor, the API server and the metadata DB are left out (a lower bound)"
            )
            print()
        return
    print(
        "SalesforceBulkOperator (--xcom airflow): one DAG per object, prepare >> bulk, run by dag.test() on "
        f"PostgreSQL; payload from XCom as {'an XComArg' if args.xcom_pull == 'xcomarg' else 'a native template'}"
    )
    print("  (the XCom goes through the Task SDK and the in-process execution API into the xcom table and back;")
    print("   a task's peak RSS is the dag.test process's VmHWM during it: task, supervisor and API server together)")
    if operator is not None:
        extra = operator.extra
        for name, size in extra["xcom"].items():
            print(
                f"  XCom of {name:<16}{size['json_mb']:9,.2f} MB as JSON, {size['stored_mb']:9,.2f} MB stored (JSONB)"
            )
        seconds = ", ".join(f"{s} {v:.1f} s" for s, v in extra["dag_test_seconds"].items())
        print(
            f"  dag.test processes (DAG parse and sync included): {seconds}; "
            f"airflow db migrate {extra['db_migrate_seconds']:.1f} s (not timed)"
        )
        if operator.rows != args.rows:
            print(f"  run at {operator.rows:,} rows, not {args.rows:,}: compared by rate")
    for failure in (operator.extra.get("xcom_failures", []) if operator is not None else []) + (
        [error] if error else []
    ):
        print(f"  FAILED {failure}")
    print()


def report(
    args: argparse.Namespace, contenders: dict[str, Contender], counts: tuple[int, int], operator_error: str | None
) -> tuple[int, dict]:
    dms, bulk2, operator = contenders.get("dms"), contenders.get("bulk2"), contenders.get("operator")
    rows = args.rows
    print()
    print(
        f"{rows:,} rows: {counts[0]:,} accounts + {counts[1]:,} contacts; chunk_rows {args.chunk_rows:,}; "
        f"operation {args.operation}; {args.parallel} worker slots for DMS"
    )
    print("wall time = first task start to last task end (each task forked from a warm fork server;")
    print("Airflow's scheduling cost per task instance is not included, see the estimate below)")
    print()
    for c in contenders.values():
        print(
            f"{c.name:<24}{rate(c.rows, c.wall)}   machine busy {c.busy_cores:.1f} of 2 cores, "
            f"emulator peak RSS {c.emulator_peak_mb or 0:,.0f} MB"
        )
    print()
    if dms is not None:
        _dms_section(args, dms, counts)
    if not args.skip_xcom:
        _operator_section(args, operator, operator_error)
    print("peak RSS per task (VmHWM, imports included), execute() seconds:")
    for c in contenders.values():
        by_phase: dict[str, list[TaskRun]] = {}
        for t in c.tasks:
            by_phase.setdefault(t.phase, []).append(t)
        for phase, tasks in by_phase.items():
            top = max(tasks, key=lambda t: t.peak_rss_mb)
            print(
                f"  {c.name:<24}{phase:<14}max {top.peak_rss_mb:6.0f} MB ({top.name}), "
                f"min {min(t.peak_rss_mb for t in tasks):6.0f} MB; execute {sum(t.seconds for t in tasks):7.1f} s"
            )
    print()
    failures: list[str] = []
    for c in contenders.values():
        for check in c.checks:
            failures.append(f"{c.name}: {check}")
    targets: list[tuple[bool, str]] = []
    ratio = None
    if dms is not None and bulk2 is not None:
        ratio = dms.wall / bulk2.wall
        targets.append(
            (
                ratio <= TARGET_VS_BULK2,
                f"DMS end to end / raw bulk2 upload = {dms.wall:.1f} s / {bulk2.wall:.1f} s = {ratio:.2f} "
                f"(target <= {TARGET_VS_BULK2})",
            )
        )
    results: dict[str, Any] = {
        "rows": rows,
        "chunk_rows": args.chunk_rows,
        "operation": args.operation,
        "contenders": {
            k: {
                "name": c.name,
                "rows": c.rows,
                "wall": c.wall,
                "busy_cores": c.busy_cores,
                "extra": c.extra,
                "emulator_peak_mb": c.emulator_peak_mb,
                "tasks": [t.__dict__ for t in c.tasks if t.phase != "reconcile"],
            }
            for k, c in contenders.items()
        },
        "vs_bulk2": ratio,
    }
    if operator is not None and dms is not None:
        dms_rate, op_rate = rows / dms.wall, operator.rows / operator.wall
        speedup = dms_rate / op_rate
        same = "same size" if operator.rows == rows else f"rates: the operator ran {operator.rows:,} rows (XCom limit)"
        targets.append(
            (
                speedup >= TARGET_VS_OPERATOR,
                f"DMS / SalesforceBulkOperator = {dms_rate:,.0f} / {op_rate:,.0f} rows/s = {speedup:.1f}x "
                f"({same}; target >= {TARGET_VS_OPERATOR:.0f}x)",
            )
        )
        results["vs_operator"] = speedup
    elif args.skip_xcom:
        print("[SKIP] SalesforceBulkOperator baseline (--skip-xcom)")
    if operator_error:
        # Not a correctness failure (nothing was half-loaded and left), but the target cannot be judged.
        targets.append(
            (
                False,
                "DMS / SalesforceBulkOperator: not measured, the operator could not run "
                f"({operator_error.splitlines()[0]})",
            )
        )
    if dms is not None:
        top = max(dms.tasks, key=lambda t: t.peak_rss_mb)
        scale = "" if rows >= 10_000_000 else f" at {rows:,} rows; the target is set for 10M"
        targets.append(
            (
                top.peak_rss_mb <= TARGET_RSS_MB,
                f"peak RSS of any DMS task = {top.peak_rss_mb:.0f} MB ({top.name}){scale} "
                f"(target <= {TARGET_RSS_MB} MB)",
            )
        )
    for ok, text in targets:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")
    for failure in failures:
        print(f"[FAIL] correctness: {failure}")
    if not failures and contenders:
        reconciled = "; DMS's reconcile identity holds with no rejects or failures" if dms is not None else ""
        print(
            "[PASS] correctness: every contender left exactly the generated accounts and contacts in the org, "
            f"every contact with its account{reconciled}"
        )
    results["targets"] = [{"ok": ok, "text": text} for ok, text in targets]
    results["failures"] = failures
    if failures:
        return 1, results
    if not all(ok for ok, _ in targets) and not args.report_only:
        return 1, results
    return 0, results


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="accounts + contacts (half each)")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--parallel", type=int, default=4, help="DMS worker slots (tasks at a time)")
    parser.add_argument("--operation", choices=["insert", "upsert"], default="insert")
    parser.add_argument(
        "--xcom-max-rows",
        type=int,
        default=2_000_000,
        help="largest run of the SalesforceBulkOperator baseline (its payload is a list of dicts in XCom)",
    )
    parser.add_argument(
        "--xcom",
        choices=["airflow", "file"],
        default="airflow",
        help="the operator baseline's XCom: through Airflow (dag.test on PostgreSQL; default) or a file (lower bound)",
    )
    parser.add_argument(
        "--xcom-pull",
        choices=["xcomarg", "template"],
        default="xcomarg",
        help='--xcom airflow: payload=prepare() (XComArg) or the template "{{ ti.xcom_pull(...) }}" rendered natively',
    )
    parser.add_argument(
        "--xcom-max-rss-mb",
        type=int,
        default=8000,
        help="--xcom airflow: kill a dag.test process above this RSS and retry at half the size",
    )
    parser.add_argument(
        "--xcom-min-rows",
        type=int,
        default=50_000,
        help="--xcom airflow: the smallest size to retry at after a failure",
    )
    parser.add_argument("--emulator-db", choices=["auto", "memory", "file"], default="auto")
    parser.add_argument("--skip-xcom", action="store_true", help="leave out the SalesforceBulkOperator baseline")
    parser.add_argument(
        "--only",
        choices=["operator"],
        help="run only this contender (the report then has no ratios); for working on a baseline",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--report-only", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, logs, results.json)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each task's execute() into the work directory (implies --keep)"
    )
    parser.add_argument("--workdir", type=Path, help="where to put the data (default: a new temp directory)")
    args = parser.parse_args(argv)
    args.keep = args.keep or args.profile

    workdir = Path(tempfile.mkdtemp(prefix="dms-bench-scale-", dir=args.workdir))
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    # The fork server and every task inherit this environment; the connections, which
    # change with each contender's emulator, travel in each task's spec.
    os.environ.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "DMS_DATA_ROOT": str(workdir / "data"),
            "DMS_RESULTS_DIR": str(workdir / "results"),
            "REQUESTS_CA_BUNDLE": str(workdir / "certs" / "ca.pem"),
            # Python 3.11's fork server ignores the parent's sys.path and would skip the preload
            # (it swallows the ImportError): it finds the modules through PYTHONPATH instead.
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(ROOT), str(ROOT / "plugins")]),
        }
    )
    if args.profile:
        (workdir / "profiles").mkdir()
        os.environ["DMS_BENCH_PROFILE"] = str(workdir / "profiles")
    t = time.perf_counter()
    counts = generate(workdir / "data" / "bench_scale", workdir / "prepared", args.rows, args.seed)
    size_mb = sum(p.stat().st_size for p in (workdir / "data" / "bench_scale").iterdir()) / 1e6
    print(
        f"generated {counts[0]:,} accounts + {counts[1]:,} contacts ({size_mb:,.0f} MB UTF-8) and their "
        f"Salesforce-shaped CSVs in {time.perf_counter() - t:.1f} s; work directory {workdir}",
        flush=True,
    )
    file_db = args.emulator_db == "file" or (args.emulator_db == "auto" and args.rows > EMULATOR_FILE_ABOVE)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["scale_tasks", "scale_preload"])
    services = Services(workdir, file_db)
    contenders: dict[str, Contender] = {}
    code = 1
    try:
        # Start the fork server (and its imports) before any clock.
        warm = Scheduler(ctx, 1, workdir / "tasks-warmup.log")
        warm.add(Node("warm-up", "noop", {"kind": "noop"}, lambda: True, (0,)))
        warm.run()
        print(f"emulator store: {'SQLite files' if file_db else 'memory'}", flush=True)
        if args.only is None:
            contenders["bulk2"] = run_bulk2(args, ctx, services, workdir / "prepared", counts)
            print(f"raw bulk2 upload: {contenders['bulk2'].wall:.1f} s", flush=True)
            contenders["dms"] = run_dms(args, ctx, services, workdir, counts)
            print(f"DMS: {contenders['dms'].wall:.1f} s", flush=True)
        operator_error = None
        if not args.skip_xcom:
            try:
                contenders["operator"] = run_operator(args, ctx, services, workdir)
                print(f"SalesforceBulkOperator: {contenders['operator'].wall:.1f} s", flush=True)
            except XComPathFailed as failure:
                operator_error = str(failure)
        contenders = {k: contenders[k] for k in ("bulk2", "dms", "operator") if k in contenders}
        code, results = report(args, contenders, counts, operator_error)
        (workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        services.stop()
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
