"""Certificates of the loopback cluster, laid out as kubeadm lays them out.

Keys are ECDSA P-256 (kubeadm's `encryptionAlgorithm: ECDSA-P256`) because generating a dozen RSA keys
would be most of the start-up time on a small machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cluster.control.layout import Layout

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "kubeadm:cluster-admins"
LIMITED_USER = "dr-limited"
TOKEN_USER = "system:serviceaccount:default:dr-token"
VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _sans(dns: Iterable[str], ips: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return x509.SubjectAlternativeName(names)


def new_ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 10 * VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued, cn: str, *, orgs: Iterable[str] = (), server: bool = False, client: bool = False,
    dns: Iterable[str] = (), ips: Iterable[str] = (),
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    dns, ips = list(dns), list(ips)
    if dns or ips:
        builder = builder.add_extension(_sans(dns, ips), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def cert_pem(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.PEM)


def key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def write_pair(directory: Path, stem: str, issued: Issued) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.crt").write_bytes(cert_pem(issued))
    key_file = directory / f"{stem}.key"
    key_file.write_bytes(key_pem(issued))
    key_file.chmod(0o600)


def load_pair(directory: Path, stem: str) -> Issued:
    cert = x509.load_pem_x509_certificate((directory / f"{stem}.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(cert, key)


def generate_cluster_pki(layout: Layout, control_planes: list[str]) -> None:
    """Cluster CA, serving and client certs under DIR/pki; kubeadm's etcd PKI in each control-plane node.

    Idempotent: an existing CA is kept, so `up` on an existing directory does not invalidate the
    kubeconfig or the members' certificates.
    """
    pki = layout.pki
    if (pki / "ca.crt").exists():
        return
    ca = new_ca("kubernetes")
    write_pair(pki, "ca", ca)
    write_pair(pki, "apiserver", issue(
        ca, "kube-apiserver", server=True,
        dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", *control_planes],
        ips=["127.0.0.1", "10.96.0.1"],
    ))
    write_pair(pki, "admin", issue(ca, ADMIN_USER, orgs=[ADMIN_GROUP], client=True))
    write_pair(pki, "limited", issue(ca, LIMITED_USER, client=True))
    # kube-apiserver's --token-auth-file format: token,user,uid,"group1,group2"
    token = secrets.token_hex(16)
    (pki / "token").write_text(token + "\n")
    (pki / "tokens.csv").write_text(f'{token},{TOKEN_USER},dr-token-uid,"system:serviceaccounts"\n')

    # kubeadm: one etcd CA for every member; each node holds a copy of ca.{crt,key}.
    etcd_ca = new_ca("etcd-ca")
    apiserver_etcd_client = issue(etcd_ca, "kube-apiserver-etcd-client", client=True)
    write_pair(pki, "etcd-ca", etcd_ca)
    write_pair(pki, "apiserver-etcd-client", apiserver_etcd_client)
    for node in control_planes:
        d = layout.etcd_pki(node)
        write_pair(d, "ca", etcd_ca)
        alt = {"dns": ["localhost", node], "ips": ["127.0.0.1", "::1"]}
        write_pair(d, "server", issue(etcd_ca, node, server=True, client=True, **alt))
        write_pair(d, "peer", issue(etcd_ca, node, server=True, client=True, **alt))
        write_pair(d, "healthcheck-client", issue(etcd_ca, "kube-etcd-healthcheck-client", client=True))
        write_pair(d.parent, "apiserver-etcd-client", apiserver_etcd_client)
