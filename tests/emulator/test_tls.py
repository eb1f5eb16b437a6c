"""The emulator's certificates: a CA kept across restarts, a server certificate for every host asked for."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from salesforce_emulator.tls import CA_FILE, CERT_FILE, ensure_certificates


def _sans(cert_dir: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate((cert_dir / CERT_FILE).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in names.get_values_for_type(x509.DNSName)} | {
        str(v) for v in names.get_values_for_type(x509.IPAddress)
    }


def test_server_certificate_is_signed_by_the_ca_and_names_localhost(tmp_path: Path) -> None:
    ca_file = ensure_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    server.verify_directly_issued_by(ca)
    assert {"localhost", "127.0.0.1", "::1"} <= _sans(tmp_path)


def test_extra_host_reissues_the_server_certificate_but_keeps_the_ca(tmp_path: Path) -> None:
    ensure_certificates(tmp_path)
    ca_before = (tmp_path / CA_FILE).read_bytes()
    ensure_certificates(tmp_path, ("salesforce-emulator",))
    assert (tmp_path / CA_FILE).read_bytes() == ca_before
    assert "salesforce-emulator" in _sans(tmp_path)
    server = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))


def test_restart_with_the_same_hosts_changes_nothing(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, ("salesforce-emulator",))
    before = (tmp_path / CERT_FILE).read_bytes()
    ensure_certificates(tmp_path, ("salesforce-emulator",))
    assert (tmp_path / CERT_FILE).read_bytes() == before
