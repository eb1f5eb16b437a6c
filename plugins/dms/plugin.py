"""The Migrations page: DMS runs from the audit store, inside the Airflow 3 UI.

An Airflow plugin with two parts:

* a FastAPI app that Airflow's API server mounts under ``/dms``: the HTML page
  ``/dms/migrations``, JSON under ``/dms/api/runs`` and downloads of a run's reject, error
  and success CSVs;
* an external view that puts "Migrations" in the UI's navigation; the UI shows ``href`` in
  an iframe at ``/plugin/migrations``, so the page is same-origin and gets the UI's cookie.

Every endpoint needs an authenticated Airflow user, checked by Airflow's own ``get_user``
(the ``Authorization: Bearer`` header, else the UI's ``_token`` cookie), and the user must
be allowed to read the runs of a DAG to see its audit records. The page needs no script and
no CDN: the chart is an SVG drawn on the server.

Registered by ``plugins/dms_plugin.py``: ``plugins/.airflowignore`` keeps Airflow's plugin
scan out of ``dms/`` (it would import every file there as a top-level module).

Airflow loads plugins in every process, task processes included, so this module imports
only FastAPI at the top; Airflow's API-server modules, the audit client and the engine are
imported when a request needs them.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

# A plain abstract class: cheap to import, and FastAPI needs it at runtime for the signatures.
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.sdk.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

if TYPE_CHECKING:
    from dms.audit import Audit

log = logging.getLogger(__name__)

#: where the API server mounts the app; the UI's nav entry and the page's links use it
URL_PREFIX = "/dms"
#: the audit store the page reads: the connection and database the DMS operators write to
AUDIT_CONN_ENV = "DMS_AUDIT_CONN_ID"
AUDIT_DATABASE_ENV = "DMS_AUDIT_DATABASE"
# A page must answer while someone waits: two attempts and a short client timeout, instead
# of the operators' four attempts and the SDK's 150 s read timeout.
AUDIT_ATTEMPTS = 2
AUDIT_TIMEOUT_SECONDS = 10.0
#: report kind in a download URL -> its key in a run record's object counts
CSV_KINDS = {"rejects": "rejects_csv", "errors": "errors_csv", "success": "success_csv"}
#: the counts the page shows for each object, in this order; the chart draws the last three
COUNTS = ("source", "loaded", "rejected", "failed")
CHART_SERIES = (("loaded", "#2f855a"), ("rejected", "#d69e2e"), ("failed", "#c53030"))
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# No remote resource and no inline script: the page is HTML, inline CSS, inline SVG and one
# script of its own. Framed only by the Airflow UI itself (same origin).
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
#: run facts the reconcile step records besides the counts, published when they are strings
_RUN_FACTS = ("run_type", "triggering_user", "start_date", "end_date", "retry_of")
# The UI frames the page in a sandbox without allow-top-navigation, so a target=_top link to
# an Airflow page is blocked there. The frame is same-origin (allow-same-origin), so such a
# link is followed from the top document instead; outside a frame the browser follows it.
_PAGE_SCRIPT = """\
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-airflow-link]");
  if (!link || window.top === window || event.defaultPrevented) return;
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  try {
    const top = window.top.document;
    const proxy = top.createElement("a");
    proxy.href = link.href;
    top.body.appendChild(proxy);
    proxy.click();
    proxy.remove();
    event.preventDefault();
  } catch (error) {
    // Framed by another origin after all: leave the link to the browser.
  }
});
"""


class AuditStoreError(Exception):
    """The audit store could not be read; the message is safe to show (it holds no secrets)."""

    def __init__(self, message: str, status_code: int = 503) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- authentication and authorization -----------------------------------------------------


async def authenticated_user(request: Request) -> BaseUser:
    """The Airflow user of this request, exactly as Airflow's own API decides it.

    Airflow's ``get_user`` takes ``Authorization: Bearer <jwt>`` first, then a user the
    token-refresh middleware already verified, then the ``_token`` cookie the UI sets at
    login. No or a bad token raises 401 or 403.
    """
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    return await get_user(request, _oauth_token=None, bearer_credentials=credentials)


UserDep = Annotated[BaseUser, Depends(authenticated_user)]


async def _user_or_none(request: Request) -> BaseUser | None:
    """The user, or None when the request is anonymous (the page then redirects to the login)."""
    try:
        return await authenticated_user(request)
    except HTTPException as exc:
        if exc.status_code in (401, 403):
            return None
        raise


def readable_dag_ids(user: BaseUser, dag_ids: Iterable[str]) -> set[str]:
    """The DAGs among ``dag_ids`` whose runs ``user`` may read, as the auth manager decides.

    The audit records of a run are run data: the same permission as reading the DAG's runs
    in the UI (GET on the DAG's RUN entity), with the DAG's team when multi-team is on.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    wanted = sorted(set(dag_ids))
    if not wanted:
        return set()
    teams = DagModel.get_dag_id_to_team_name_mapping(wanted)
    manager = get_auth_manager()
    return {
        dag_id
        for dag_id in wanted
        if manager.is_authorized_dag(
            method="GET",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id, team_name=teams.get(dag_id)),
            user=user,
        )
    }


def _require_dag(user: BaseUser, dag_id: str) -> None:
    if dag_id not in readable_dag_ids(user, [dag_id]):
        raise HTTPException(status_code=403, detail=f"not allowed to read the runs of {dag_id!r}")


# -- the audit store ----------------------------------------------------------------------


def open_audit() -> Audit:
    """An Audit on the connection and database the page reads, set to fail fast."""
    from dms.audit import DEFAULT_DATABASE, Audit
    from dms.hooks.cloudant import DmsCloudantHook

    conn_id = os.environ.get(AUDIT_CONN_ENV) or DmsCloudantHook.default_conn_name
    hook = DmsCloudantHook(cloudant_conn_id=conn_id)
    client = hook.get_conn()
    if "timeout" not in hook.get_connection(conn_id).extra_dejson:
        # Only when the connection sets none: an operator's own choice wins.
        client.set_http_config({"timeout": AUDIT_TIMEOUT_SECONDS})
    database = os.environ.get(AUDIT_DATABASE_ENV) or DEFAULT_DATABASE
    return Audit(client, database, max_attempts=AUDIT_ATTEMPTS, backoff_seconds=0.2)


def _read_audit(what: str, read: Any) -> Any:
    """Run ``read(audit)``; turn every way the audit store can fail into an AuditStoreError.

    The messages name the connection, the store's URL and the database, never credentials
    (the hook refuses credentials in the URL); unexpected errors are logged, not shown.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException

    from dms.audit import AuditRefused, AuditUnavailable
    from dms.errors import DmsError

    try:
        audit = open_audit()
    except AirflowNotFoundException as exc:
        raise AuditStoreError(f"The audit store connection is not defined: {exc}") from exc
    except DmsError as exc:  # a misconfigured connection: FatalError from the hook
        raise AuditStoreError(f"The audit store connection is not usable: {exc}") from exc
    where = f"{audit.client.service_url} (database {audit.database!r})"
    try:
        return read(audit)
    except AuditUnavailable as exc:
        raise AuditStoreError(
            f"The audit store at {where} is not reachable, so {what} cannot be shown. "
            f"Check that it is running, then reload this page. ({exc})"
        ) from exc
    except AuditRefused as exc:
        raise AuditStoreError(f"The audit store at {where} refused to give {what}: {exc}", status_code=502) from exc
    except Exception as exc:
        log.exception("reading %s from the audit store at %s failed", what, where)
        raise AuditStoreError(
            f"Reading {what} from the audit store at {where} failed ({type(exc).__name__}); "
            "the API server log has the details."
        ) from exc


def _list_runs(user: BaseUser, dag_id: str | None, limit: int) -> list[dict[str, Any]]:
    runs = _read_audit("the list of runs", lambda audit: audit.list_runs(dag_id))
    allowed = readable_dag_ids(user, {str(run.get("dag_id")) for run in runs})
    # Filtered before the limit, so that hidden runs never shorten a user's page.
    return [run for run in runs if run.get("dag_id") in allowed][:limit]


def _get_run(user: BaseUser, dag_id: str, run_id: str) -> dict[str, Any]:
    _require_dag(user, dag_id)
    doc = _read_audit(f"run {run_id!r}", lambda audit: audit.get_run(dag_id, run_id))
    if doc is None:
        raise HTTPException(status_code=404, detail=f"no audit record for run {run_id!r} of {dag_id!r}")
    return doc


# -- what a run looks like from outside ---------------------------------------------------


def _is_count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _objects(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objects = doc.get("objects")
    return {str(k): v for k, v in objects.items() if isinstance(v, dict)} if isinstance(objects, dict) else {}


def _counts(counts: dict[str, Any]) -> dict[str, int | float]:
    # Only numbers: the record's file paths stay on the server, and whatever else a future
    # writer adds to it is not published by accident.
    return {key: value for key, value in counts.items() if _is_count(value)}


class Links:
    """URLs of the page, the API and the Airflow UI, for the base path the request came in on."""

    def __init__(self, request: Request) -> None:
        # A mounted app's root_path is the Airflow base path (for a base_url with a path)
        # followed by the mount prefix.
        self.app = request.scope.get("root_path", "").rstrip("/")
        self.airflow = self.app.removesuffix(URL_PREFIX)

    def page(self, **query: str) -> str:
        params = {k: v for k, v in query.items() if v}
        return f"{self.app}/migrations" + (f"?{urlencode(params)}" if params else "")

    def run_api(self, dag_id: str, run_id: str) -> str:
        return f"{self.app}/api/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"

    def csv(self, dag_id: str, run_id: str, object_name: str, kind: str) -> str:
        return f"{self.run_api(dag_id, run_id)}/files/{quote(object_name, safe='')}/{kind}.csv"

    def airflow_run(self, dag_id: str, run_id: str) -> str:
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def run_summary(doc: dict[str, Any], links: Links) -> dict[str, Any]:
    """A run record as the API publishes it: whitelisted fields, counts, links; no paths."""
    dag_id, run_id = str(doc.get("dag_id")), str(doc.get("run_id"))
    objects = {name: _counts(counts) for name, counts in _objects(doc).items()}
    totals = {key: sum(o.get(key, 0) for o in objects.values()) for key in COUNTS}
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "status": doc.get("status"),
        "spec": doc.get("spec"),
        "dry_run": bool(doc.get("dry_run", False)),
        "updated_at": doc.get("updated_at"),
        **{fact: doc[fact] for fact in _RUN_FACTS if isinstance(doc.get(fact), str) and doc[fact]},
        "objects": objects,
        "totals": totals,
        "links": {
            "page": links.page(dag_id=dag_id, run_id=run_id),
            "api": links.run_api(dag_id, run_id),
            "airflow": links.airflow_run(dag_id, run_id),
        },
    }


def run_detail(doc: dict[str, Any], links: Links) -> dict[str, Any]:
    """A run summary with its problems and the download URL of every report that exists."""
    summary = run_summary(doc, links)
    files: dict[str, dict[str, str]] = {}
    for name in summary["objects"]:
        available = {}
        for kind in CSV_KINDS:
            try:
                report_path(doc, name, kind)
            except HTTPException:
                continue
            available[kind] = links.csv(summary["dag_id"], summary["run_id"], name, kind)
        files[name] = available
    problems = doc.get("problems")
    return {**summary, "problems": [str(p) for p in problems] if isinstance(problems, list) else [], "files": files}


def report_path(doc: dict[str, Any], object_name: str, kind: str) -> Path:
    """The CSV a run record names for an object, if it is a file inside the DAG's results.

    The path comes from the audit record, which the API never trusts: it must resolve
    (symlinks followed) to a ``.csv`` file under ``results_root()/<dag_id>``, so neither a
    tampered record nor a link can make the page serve any other file, nor another DAG's.
    """
    from dms.operators.base import results_root

    counts = _objects(doc).get(object_name)
    raw = counts.get(CSV_KINDS[kind]) if counts is not None and kind in CSV_KINDS else None
    if not isinstance(raw, str) or not raw.strip():
        raise HTTPException(status_code=404, detail=f"run has no {kind} report for {object_name!r}")
    root = results_root()
    dag_root = (root / str(doc.get("dag_id"))).resolve()
    path = (root / raw).resolve()  # an absolute `raw` replaces root, as reconcile writes them
    if not (dag_root.is_relative_to(root) and path.is_relative_to(dag_root)) or path.suffix.lower() != ".csv":
        log.warning("refused to serve %r for %s: outside %s", raw, doc.get("_id"), dag_root)
        raise HTTPException(status_code=403, detail="the report is not inside the results directory")
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"the {kind} report of {object_name!r} is no longer on the server")
    return path


# -- the app --------------------------------------------------------------------------------

app = FastAPI(
    title="DMS migrations",
    description="DMS runs from the audit store: counts per object, reports, links to Airflow.",
    # The API server has its own docs; these would be one more unauthenticated page.
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.middleware("http")
async def _no_caching(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    # Audit data is per user: no shared cache keeps it, and the browser keeps no copy.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@app.exception_handler(AuditStoreError)
async def _audit_store_error(request: Request, exc: AuditStoreError) -> Response:
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


@app.get("/api/runs")
def api_runs(
    request: Request,
    user: UserDep,
    dag_id: Annotated[str | None, Query(description="only the runs of this DAG")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The runs the user may read, newest first, with their status and per-object counts."""
    links = Links(request)
    return {"runs": [run_summary(doc, links) for doc in _list_runs(user, dag_id, limit)]}


@app.get("/api/runs/{dag_id}/{run_id}")
def api_run(request: Request, user: UserDep, dag_id: str, run_id: str) -> dict[str, Any]:
    """One run: counts per object, the reconcile's problems and its report downloads."""
    return run_detail(_get_run(user, dag_id, run_id), Links(request))


@app.get("/api/runs/{dag_id}/{run_id}/files/{object_name}/{kind}.csv")
def api_report(user: UserDep, dag_id: str, run_id: str, object_name: str, kind: str) -> FileResponse:
    """A run's reject, error or success CSV for one object, as an attachment."""
    if kind not in CSV_KINDS:
        raise HTTPException(status_code=404, detail=f"no report kind {kind!r}; one of {sorted(CSV_KINDS)}")
    path = report_path(_get_run(user, dag_id, run_id), object_name, kind)
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=path.name)


@app.get("/static/migrations.js")
def page_script(user: UserDep) -> Response:
    """The page's one script (see _PAGE_SCRIPT)."""
    return Response(_PAGE_SCRIPT, media_type="text/javascript; charset=utf-8")


@app.get("/migrations", response_class=HTMLResponse)
def migrations_page(
    request: Request,
    user: Annotated[BaseUser | None, Depends(_user_or_none)],
    dag: Annotated[str | None, Query(description="list only the runs of this DAG")] = None,
    dag_id: Annotated[str | None, Query(description="with run_id: the run to show")] = None,
    run_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response:
    """The page: the runs, and the selected (else the newest listed) run's counts, chart and reports."""
    if user is None:
        from airflow.api_fastapi.app import get_auth_manager

        # A path, not the full URL: the login only returns to URLs on Airflow's own base_url.
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(get_auth_manager().get_url_login(next_url=back), status_code=303)
    links = Links(request)
    headers = {"Content-Security-Policy": _PAGE_CSP}
    try:
        runs = [run_summary(doc, links) for doc in _list_runs(user, dag or None, limit)]
        selected: dict[str, Any] | None = None
        if dag_id and run_id:
            selected = run_detail(_get_run(user, dag_id, run_id), links)
        elif runs:
            newest = runs[0]
            selected = run_detail(_get_run(user, newest["dag_id"], newest["run_id"]), links)
    except AuditStoreError as exc:
        body = _message("The audit store is unavailable", str(exc))
        return HTMLResponse(_document(body, links, dag), status_code=exc.status_code, headers=headers)
    except HTTPException as exc:
        body = _message("Run not shown", str(exc.detail))
        return HTMLResponse(_document(body, links, dag), status_code=exc.status_code, headers=headers)
    body = _runs_table(runs, links, selected, dag) + (_run_section(selected) if selected else "")
    return HTMLResponse(_document(body, links, dag), headers=headers)


# -- HTML (every value from the audit store goes through _e) ------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> str:
    if not _is_count(value):
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


_STYLE = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #4a5568; --line: #e2e8f0; --bg: #fff; --accent: #2b6cb0; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e2e8f0; --muted: #a0aec0; --line: #2d3748; --bg: #1a202c; --accent: #90cdf4; }
}
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 1.25rem; }
h1 { font-size: 1.35rem; margin: 0 0 .75rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); } .muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.selected { background: rgba(66, 153, 225, .12); }
.status { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: .8rem; color: #fff; }
.status-success { background: #2f855a; } .status-failed { background: #c53030; } .status-other { background: #718096; }
.message { border: 1px solid #c53030; border-radius: .4rem; padding: .75rem 1rem; max-width: 60rem; }
form { margin: 0 0 .75rem; } input { font: inherit; padding: .15rem .35rem; }
ul.objects { margin: 0; padding-left: 1rem; } .legend span { margin-right: 1rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
"""


def _document(body: str, links: Links, dag: str | None) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>DMS migrations</title><style>{_STYLE}</style>"
        f"<script src='{_e(links.app)}/static/migrations.js' defer></script></head><body>"
        "<h1>DMS migrations</h1>"
        f"<form method='get' action='{_e(links.page())}'><label>DAG <input name='dag' value='{_e(dag)}' "
        "placeholder='all DAGs'></label> <button type='submit'>Filter</button></form>"
        f"{body}</body></html>"
    )


def _message(title: str, text: str) -> str:
    return f"<div class='message' role='alert' id='dms-error'><strong>{_e(title)}</strong><p>{_e(text)}</p></div>"


def _status(status: Any) -> str:
    kind = status if status in ("success", "failed") else "other"
    return f"<span class='status status-{kind}'>{_e(status or 'unknown')}</span>"


def _runs_table(runs: list[dict[str, Any]], links: Links, selected: dict[str, Any] | None, dag: str | None) -> str:
    if not runs:
        return "<p class='muted' id='dms-no-runs'>No runs in the audit store yet.</p>"
    chosen = (selected["dag_id"], selected["run_id"]) if selected else None
    rows = []
    for run in runs:
        objects = "".join(
            f"<li>{_e(name)}: "
            + ", ".join(f"{key} <span data-count='{key}'>{_num(counts.get(key))}</span>" for key in COUNTS)
            + "</li>"
            for name, counts in run["objects"].items()
        )
        css = " class='selected'" if (run["dag_id"], run["run_id"]) == chosen else ""
        rows.append(
            f"<tr{css} data-dag-id='{_e(run['dag_id'])}' data-run-id='{_e(run['run_id'])}'>"
            f"<td>{_e(run['dag_id'])}</td>"
            f"<td><a href='{_e(links.page(dag=dag or '', dag_id=run['dag_id'], run_id=run['run_id']))}'>"
            f"{_e(run['run_id'])}</a></td>"
            f"<td>{_status(run['status'])}{' <span class=muted>dry run</span>' if run['dry_run'] else ''}</td>"
            f"<td class='muted'>{_e(run['updated_at'])}</td>"
            f"<td><ul class='objects'>{objects}</ul></td>"
            f"<td><a href='{_e(run['links']['airflow'])}' target='_top' data-airflow-link>Airflow run</a></td></tr>"
        )
    return (
        "<h2>Runs</h2><table id='dms-runs'><thead><tr><th>DAG</th><th>Run</th><th>Status</th><th>Updated</th>"
        "<th>Objects</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _run_section(run: dict[str, Any]) -> str:
    rows = []
    for name, counts in run["objects"].items():
        cells = "".join(
            f"<td class='n' data-object='{_e(name)}' data-count='{key}'>{_num(counts.get(key))}</td>" for key in COUNTS
        )
        files = run["files"].get(name, {})
        downloads = " ".join(f"<a href='{_e(url)}' download>{_e(kind)}.csv</a>" for kind, url in files.items())
        rows.append(f"<tr><td>{_e(name)}</td>{cells}<td>{downloads or '<span class=muted>none</span>'}</td></tr>")
    problems = "".join(f"<li>{_e(p)}</li>" for p in run["problems"])
    return (
        f"<section id='dms-run' data-dag-id='{_e(run['dag_id'])}' data-run-id='{_e(run['run_id'])}'>"
        f"<h2>Run {_e(run['run_id'])} of {_e(run['dag_id'])} {_status(run['status'])}</h2>"
        f"<p><a href='{_e(run['links']['airflow'])}' target='_top' data-airflow-link>Open the run in Airflow</a>"
        f" · <a href='{_e(run['links']['api'])}'>JSON</a></p>"
        + _facts(run)
        + (f"<ul class='problems'>{problems}</ul>" if problems else "")
        + "<table id='dms-objects'><thead><tr><th>Object</th>"
        + "".join(f"<th class='n'>{key.capitalize()}</th>" for key in COUNTS)
        + "<th>Reports</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + bar_chart(run["objects"])
        + "</section>"
    )


def _facts(run: dict[str, Any]) -> str:
    labels = (
        ("run_type", "type"),
        ("triggering_user", "triggered by"),
        ("start_date", "started"),
        ("end_date", "reconciled"),
        ("retry_of", "retries the failed rows of"),
    )
    # run_type is recorded as the enum's str(): DagRunType.MANUAL reads as "manual".
    shown = {**run, "run_type": str(run.get("run_type") or "").removeprefix("DagRunType.").lower()}
    facts = [f"{label} <strong>{_e(shown[key])}</strong>" for key, label in labels if shown.get(key)]
    return f"<p class='muted' id='dms-facts'>{' · '.join(facts)}</p>" if facts else ""


def bar_chart(objects: dict[str, dict[str, Any]]) -> str:
    """Loaded, rejected and failed rows per object as stacked horizontal bars, in inline SVG.

    Every bar is scaled to the largest object's total, so the objects compare at a glance.
    """
    if not objects:
        return ""
    label_w, bar_w, row_h, top = 160, 440, 28, 8
    totals = {name: sum(max(0, counts.get(key, 0) or 0) for key, _ in CHART_SERIES) for name, counts in objects.items()}
    scale = bar_w / max(1, *totals.values())
    height = top + row_h * len(objects) + 8
    parts = [
        f"<svg id='dms-chart' role='img' aria-label='Loaded, rejected and failed rows per object' "
        f"xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 80}' height='{height}' "
        f"viewBox='0 0 {label_w + bar_w + 80} {height}' font-size='12' font-family='system-ui, sans-serif'>"
    ]
    for index, (name, counts) in enumerate(objects.items()):
        y = top + index * row_h
        parts.append(f"<text x='{label_w - 8}' y='{y + 15}' text-anchor='end' fill='currentColor'>{_e(name)}</text>")
        x = float(label_w)
        for key, colour in CHART_SERIES:
            value = max(0, counts.get(key, 0) or 0)
            width = value * scale
            if width > 0:
                parts.append(
                    f"<rect x='{x:.1f}' y='{y}' width='{width:.1f}' height='20' fill='{colour}' "
                    f"data-object='{_e(name)}' data-series='{key}' data-value='{_e(value)}'>"
                    f"<title>{_e(name)}: {_num(value)} {key}</title></rect>"
                )
            x += width
        parts.append(f"<text x='{x + 6:.1f}' y='{y + 15}' fill='currentColor'>{_num(totals[name])}</text>")
    parts.append("</svg>")
    legend = "".join(
        f"<span><i class='swatch' style='background:{colour}'></i>{key}</span>" for key, colour in CHART_SERIES
    )
    return f"<h2>Rows per object</h2><div class='legend'>{legend}</div>" + "".join(parts)


# -- the plugin ---------------------------------------------------------------------------


class DmsPlugin(AirflowPlugin):
    """The Migrations page in Airflow's UI, served by the API server."""

    name = "dms"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "DMS migrations"}]
    external_views = [
        {
            "name": "Migrations",
            "href": f"{URL_PREFIX}/migrations",
            "destination": "nav",
            # With a url_route the UI embeds the page (at /plugin/migrations) instead of
            # opening a new tab; nav_top_level puts it beside Dags and Assets.
            "url_route": "migrations",
            "nav_top_level": True,
        }
    ]
