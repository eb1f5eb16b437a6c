"""Command line: ``python -m salesforce_emulator --org include/org/sample_org.yaml --port 8443``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .schema import SchemaError, load_schema
from .state import MAX_UPLOAD_BYTES, Credentials, Faults
from .tls import CERT_FILE, KEY_FILE, ensure_certificates


def _parser() -> argparse.ArgumentParser:
    defaults = Credentials()
    p = argparse.ArgumentParser(prog="python -m salesforce_emulator", description=__doc__)
    p.add_argument("--org", required=True, help="org schema YAML (include/org/*.yaml)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--db", default=None, help="SQLite file for records; omitted: in memory")
    p.add_argument(
        "--cert-dir",
        default=".emulator/certs",
        help="where the CA (ca.pem, for REQUESTS_CA_BUNDLE) and the server certificate are kept",
    )
    p.add_argument(
        "--tls-host",
        action="append",
        default=[],
        help="extra host name for the server certificate (repeatable), e.g. salesforce-emulator in compose",
    )
    p.add_argument("--username", default=defaults.username)
    p.add_argument("--password", default=defaults.password)
    p.add_argument("--security-token", default=defaults.security_token)
    p.add_argument("--client-id", default=defaults.client_id)
    p.add_argument("--client-secret", default=defaults.client_secret)
    p.add_argument("--max-upload-bytes", type=int, default=MAX_UPLOAD_BYTES)
    p.add_argument("--seed", type=int, default=None, help="seed for the random faults")
    faults = p.add_argument_group("faults (also settable at runtime: PUT /__emulator/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency per API call")
    faults.add_argument("--error-503-rate", type=float, default=0.0, help="share of API calls answered 503")
    faults.add_argument(
        "--timeout-rate",
        type=float,
        default=0.0,
        help="share of API calls that take effect but whose answer is lost (the connection drops)",
    )
    faults.add_argument("--request-limit", type=int, default=None, help="REQUEST_LIMIT_EXCEEDED after N calls")
    faults.add_argument("--lock-row-rate", type=float, default=0.0, help="share of rows failing UNABLE_TO_LOCK_ROW")
    faults.add_argument("--fail-next-bulk-jobs", type=int, default=0, help="the next N bulk jobs end Failed")
    faults.add_argument(
        "--fail-after-rows", type=int, default=0, help="a job failed by --fail-next-bulk-jobs first processes N rows"
    )
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        schema = load_schema(args.org)
    except (SchemaError, OSError) as exc:
        print(f"salesforce_emulator: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app

    cert_dir = Path(args.cert_dir)
    ca_file = ensure_certificates(cert_dir, tuple(args.tls_host))
    app = create_app(
        schema,
        db_path=args.db,
        credentials=Credentials(args.username, args.password, args.security_token, args.client_id, args.client_secret),
        faults=Faults(
            latency_ms=args.latency_ms,
            error_503_rate=args.error_503_rate,
            timeout_rate=args.timeout_rate,
            request_limit=args.request_limit,
            lock_row_rate=args.lock_row_rate,
            fail_next_bulk_jobs=args.fail_next_bulk_jobs,
            fail_after_rows=args.fail_after_rows,
        ),
        max_upload_bytes=args.max_upload_bytes,
        seed=args.seed,
    )
    logging.basicConfig(level=args.log_level.upper())
    print(
        f"salesforce_emulator: https://{args.host}:{args.port} (CA: {ca_file}, store: {args.db or 'memory'})",
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=str(cert_dir / CERT_FILE),
        ssl_keyfile=str(cert_dir / KEY_FILE),
        log_level=args.log_level,
        timeout_keep_alive=30,
        # Tests and `make down` stop it with SIGTERM; idle keep-alive clients must not delay that.
        timeout_graceful_shutdown=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
