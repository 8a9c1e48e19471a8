"""Mutual TLS between the services: every process proves who it is with a certificate from one CA.

A server asks every caller for a certificate signed by the CA and refuses the
handshake without one; a client checks the server's certificate against the CA
and the name SHOPMESH_TLS_SERVER_NAME (default shopmesh.internal, which
scripts/make_certs.py puts in every certificate: the identity is the CA's
signature, as in SPIFFE, not a host name that changes with every replica).
Without the three files, everything is plaintext: the zero-setup local mesh.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from mesh.settings import Settings


def _files(settings: Settings) -> tuple[bytes, bytes, bytes]:
    return (Path(settings.tls_ca_file).read_bytes(), Path(settings.tls_cert_file).read_bytes(),
            Path(settings.tls_key_file).read_bytes())


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    ca, cert, key = _files(settings)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials:
    ca, cert, key = _files(settings)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def channel_options(settings: Settings) -> list[tuple[str, str]]:
    return [("grpc.ssl_target_name_override", settings.tls_server_name)] if settings.tls else []
