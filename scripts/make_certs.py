"""A private CA and one certificate per identity, for mTLS between the services (local use and tests).

    .venv/bin/python scripts/make_certs.py [--out certs] [--days 365]

Writes `ca.pem` (the root every process trusts), `ca-key.pem` (keep it private;
only this script needs it) and `<name>.pem` / `<name>-key.pem` for inventory,
order, notification, gateway and `client` (for grpcurl, grpc-health-probe and
tests). Each certificate is valid as a server and as a client, for the DNS names
`<name>`, `localhost` and `shopmesh.internal` (the name every client checks,
SHOPMESH_TLS_SERVER_NAME) and for 127.0.0.1. Point a process at its files with
SHOPMESH_TLS_CA_FILE, SHOPMESH_TLS_CERT_FILE and SHOPMESH_TLS_KEY_FILE.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IDENTITIES = ("inventory", "order", "notification", "gateway", "client")
SERVER_NAME = "shopmesh.internal"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make(out: Path, days: int = 365) -> None:
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shopmesh local CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, out / "ca-key.pem")
    for name in IDENTITIES:
        key = _key()
        names = [x509.DNSName(name), x509.DNSName("localhost"), x509.DNSName(SERVER_NAME),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, out / f"{name}-key.pem")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("certs"))
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    make(args.out, args.days)
    print(f"CA and certificates for {', '.join(IDENTITIES)} in {args.out.resolve()}")


if __name__ == "__main__":
    main()
