"""sObject Collections: small chunks in a few REST calls instead of a Bulk API 2.0 job.

A Bulk job costs at least a create, an upload, a close, some polls and three result
downloads, and Salesforce schedules it behind other jobs; a chunk of a few hundred rows is
done sooner through `/composite/sobjects`, 200 records a call.

The rows arrive formatted for a Bulk API 2.0 CSV (see `dms.transform`), and must mean the
same here: an empty cell is "no value", which Bulk reads as null on create and "unchanged"
on update, so the key is left out of the JSON record (never sent as null); `true`/`false`
become JSON booleans and numbers JSON numbers; a relationship column such as
`Account.Legacy_Id__c` becomes `{"Account": {"Legacy_Id__c": ...}}`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dms.errors import FatalError

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

BATCH = 200  # Salesforce's limit per Collections call
NUMBER_TYPES = {"int", "long", "double", "currency", "percent"}


def json_record(sobject: str, columns: Sequence[str], values: Sequence[str], types: dict[str, str]) -> dict[str, Any]:
    """One ready row as a Collections record, with the Bulk CSV's meaning of every cell."""
    record: dict[str, Any] = {"attributes": {"type": sobject}}
    for column, value in zip(columns, values, strict=True):
        if value == "":
            continue  # no value: null on create, unchanged on update, as in a Bulk CSV
        if "." in column:
            relationship, field = column.split(".", 1)
            record[relationship] = {field: value}
            continue
        kind = types.get(column, "string")
        if kind == "boolean":
            record[column] = value == "true"
        elif kind in NUMBER_TYPES:
            number = Decimal(value)
            record[column] = int(number) if kind in ("int", "long") else float(number)
        else:
            record[column] = value
    return record


def _batches(items: Sequence[Any]) -> Iterator[tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), BATCH):
        yield start, items[start : start + BATCH]


class CollectionsClient:
    """The documented sObject Collections resources over a simple_salesforce session."""

    def __init__(self, sf: Salesforce, timeout: float | None = None) -> None:
        # None: the session's timeout (the Salesforce connection's extra `timeout`).
        self.sf = sf
        self.base = sf.base_url + "composite/sobjects"
        self.timeout = timeout

    def _call(self, method: str, url: str, **kwargs: Any) -> list[dict[str, Any]]:
        from dms.salesforce.http import call

        return call(self.sf, "sObject Collections", method, url, timeout=self.timeout, **kwargs).json()

    def send(
        self, operation: str, sobject: str, external_id: str | None, records: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One call of at most 200 records; one result per record, in order.

        An update or an upsert by external id is sent again after a lost answer (doing it twice
        leaves the same records); an insert or a delete is not (OutcomeUnknownError): a second
        insert would create the records twice, a second delete would report them as failed.
        """
        if operation == "insert":
            return self._call("POST", self.base, json={"allOrNone": False, "records": list(records)})
        if operation == "update":
            body = {"allOrNone": False, "records": list(records)}
            return self._call("PATCH", self.base, json=body, repeatable_call=True)
        if operation == "upsert":
            url = f"{self.base}/{sobject}/{external_id}"
            return self._call("PATCH", url, json={"allOrNone": False, "records": list(records)}, repeatable_call=True)
        if operation == "delete":
            ids = ",".join(str(r["Id"]) for r in records)
            return self._call("DELETE", self.base, params={"ids": ids, "allOrNone": "false"})
        raise FatalError(f"sObject Collections cannot {operation}; use Bulk API 2.0")


def result_outcome(operation: str, result: dict[str, Any]) -> tuple[bool, str, bool, str, str, str]:
    """(success, id, created, error code, message, fields) of one Collections result."""
    if result.get("success"):
        created = bool(result.get("created", operation == "insert"))
        return True, result.get("id") or "", created, "", "", ""
    errors = result.get("errors") or [{}]
    first = errors[0]
    code, message = first.get("statusCode", "UNKNOWN_EXCEPTION"), first.get("message", "")
    return False, result.get("id") or "", False, code, message, ",".join(first.get("fields") or [])
