"""A real single-node Kubernetes on this machine, for the chart's tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet (built from their
Go modules by scripts/install-cluster.sh), Debian's containerd and runc for the node, the CNI
bridge plugin for pods, CoreDNS (also from its Go module) for cluster DNS, and metrics-server
(from its module too) behind the API server's aggregation layer for the autoscaler: the kubelet runs
our containers and their gRPC probes for real. Images come from scripts/build-image.sh
(Podman) and are imported into containerd.

Its networks are its own: pods get 10.244.0.0/24 on a bridge the cluster creates (shopmesh0,
10.244.0.1 is the node), Services 10.96.0.0/24. The control plane listens on 127.0.0.1; the
node's kubelet and CoreDNS on 10.244.0.1, the bridge's address, which nothing outside this
machine reaches. Test traffic goes to 127.0.0.1 through `kubectl port-forward`, or to the pods
the tests created (a Service's virtual IP, which kube-proxy, in nftables mode and in its own
tables, turns into a pod's). Everything is torn down at the end: pods killed, mounts and the bridge gone.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port
from tests.support.chart import CLUSTER_BIN, cluster_tool

BRIDGE = "shopmesh0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
NODE = "shopmesh-node"
IMAGES = ("localhost/shopmesh:local", "localhost/pause:3.10-shopmesh", "localhost/postgres:15-bookworm")


def _pki(out: Path) -> None:
    """A CA, the API server's serving certificate, client certificates and the service-account key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def pem(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shopmesh-test-cluster")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, cn: str, org: str | None = None, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        builder = (x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        (out / f"{name}.crt").write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        (out / f"{name}.key").write_bytes(pem(key))

    leaf("apiserver", "kube-apiserver", ips=("127.0.0.1", "10.96.0.1"),
         dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"))
    leaf("admin", "admin", org="system:masters")  # also the controller manager's and CoreDNS's identity
    leaf("kubelet", f"system:node:{NODE}", org="system:nodes", ips=(NODE_IP,))
    leaf("scheduler", "system:kube-scheduler")
    # The aggregation layer: the API server's identity towards an extension API server (it passes
    # the caller's name in X-Remote-* headers), and metrics-server's serving certificate.
    leaf("front-proxy", "front-proxy-client")
    leaf("metrics-server", "metrics-server", ips=(NODE_IP,), dns=("metrics-server.kube-system.svc",))
    service_accounts = rsa.generate_private_key(65537, 2048)
    (out / "sa.key").write_bytes(pem(service_accounts))
    (out / "sa.pub").write_bytes(service_accounts.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kwargs)


@dataclass
class Cluster:
    home: Path
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    netns_before: set[str] = field(default_factory=set)

    # --- using it ---

    @property
    def kubeconfig(self) -> Path:
        return self.home / "admin.kubeconfig"

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cluster_tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=check, input=input, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cluster_tool("helm"), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def ready_pods(self, component: str) -> list[dict[str, Any]]:
        pods = self.get("pods", "-l", f"app.kubernetes.io/name={component}")["items"]
        return [p for p in pods if p["metadata"].get("deletionTimestamp") is None and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))]

    def pod_metrics(self, pod: str, port: int) -> str:
        """A pod's /metrics, through the API server's pod proxy."""
        return self.kubectl("get", "--raw", f"/api/v1/namespaces/default/pods/{pod}:{port}/proxy/metrics").stdout

    @contextlib.contextmanager
    def port_forward(self, target: str, remote: int) -> Iterator[int]:
        local = free_port()
        log = self.home / f"port-forward-{local}.out"
        process = subprocess.Popen(
            [cluster_tool("kubectl"), "--kubeconfig", str(self.kubeconfig), "port-forward", "--address", "127.0.0.1",
             target, f"{local}:{remote}"], stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        try:
            deadline = time.monotonic() + 30
            while "Forwarding from" not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"port-forward {target} failed: {log.read_text(errors='replace')}")
                time.sleep(0.1)
            yield local
        finally:
            process.terminate()
            process.wait(10)

    # --- bringing it up ---

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        pki = self.home / "pki"
        _pki(pki)
        for who in ("admin", "kubelet", "scheduler"):
            (self.home / f"{who}.kubeconfig").write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "local",
                "clusters": [{"name": "local", "cluster": {"server": f"https://127.0.0.1:{self.api_port}",
                                                           "certificate-authority": str(pki / "ca.crt")}}],
                "users": [{"name": who, "user": {"client-certificate": str(pki / f"{who}.crt"),
                                                 "client-key": str(pki / f"{who}.key")}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": who}}],
            }))
        _remove_policy_rules()  # what a run killed before its teardown left
        self.netns_before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
        _run("ip", "link", "add", BRIDGE, "type", "bridge", check=False)
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE, check=False)
        _run("ip", "link", "set", BRIDGE, "up")
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", CLUSTER_BIN / "etcd", "--data-dir", self.home / "etcd",
                    "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                    "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--listen-metrics-urls", "")
        self._spawn("kube-apiserver", CLUSTER_BIN / "kube-apiserver",
                    "--etcd-servers", f"http://127.0.0.1:{etcd_client}", "--bind-address", "127.0.0.1",
                    "--secure-port", self.api_port, "--advertise-address", NODE_IP,
                    "--tls-cert-file", pki / "apiserver.crt", "--tls-private-key-file", pki / "apiserver.key",
                    "--client-ca-file", pki / "ca.crt", "--service-cluster-ip-range", SERVICE_CIDR,
                    "--service-account-issuer", "https://kubernetes.default.svc",
                    "--service-account-key-file", pki / "sa.pub", "--service-account-signing-key-file", pki / "sa.key",
                    "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
                    "--kubelet-client-certificate", pki / "admin.crt", "--kubelet-client-key", pki / "admin.key",
                    "--kubelet-certificate-authority", pki / "ca.crt",
                    "--kubelet-preferred-address-types", "InternalIP", "--allow-privileged=false",
                    "--profiling=false",
                    # The aggregation layer, for metrics.k8s.io (metrics-server, on the node's address).
                    "--requestheader-client-ca-file", pki / "ca.crt", "--requestheader-allowed-names", "front-proxy-client",
                    "--requestheader-username-headers", "X-Remote-User", "--requestheader-group-headers", "X-Remote-Group",
                    "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
                    "--proxy-client-cert-file", pki / "front-proxy.crt", "--proxy-client-key-file", pki / "front-proxy.key",
                    "--enable-aggregator-routing=true")
        self._until(lambda: self.kubectl("get", "--raw", "/readyz", check=False).stdout == "ok", 90, "API server ready")
        self._spawn("kube-controller-manager", CLUSTER_BIN / "kube-controller-manager",
                    "--kubeconfig", self.home / "admin.kubeconfig", "--bind-address", "127.0.0.1",
                    "--secure-port", free_port(), "--service-account-private-key-file", pki / "sa.key",
                    "--root-ca-file", pki / "ca.crt", "--use-service-account-credentials=false",
                    "--service-cluster-ip-range", SERVICE_CIDR, "--leader-elect=false", "--controllers", "*,-nodeipam")
        self._spawn("kube-scheduler", CLUSTER_BIN / "kube-scheduler", "--kubeconfig", self.home / "scheduler.kubeconfig",
                    "--bind-address", "127.0.0.1", "--secure-port", free_port(), "--leader-elect=false")
        self._containerd()
        self._coredns()
        self._kubelet(pki)
        self._kube_proxy()
        self._until(lambda: '"Ready"' in self.kubectl("get", "node", NODE, "-o", "json", check=False).stdout
                    and self._node_ready(), 90, "node Ready")
        self._kube_router()  # (it finds its node by name: after the kubelet registered it)
        self._volumes()
        self._metrics_server(pki)

    def _spawn(self, name: str, *command: object) -> None:
        log = self.home / f"{name}.out"  # not *.log: not a mesh process's log for the watch
        self.processes[name] = subprocess.Popen([str(c) for c in command], stdout=open(log, "wb"),  # noqa: SIM115
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def _until(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.home / f"{name}.out").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited ({process.returncode}) waiting for {what}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout}s")
            time.sleep(0.5)

    def _node_ready(self) -> bool:
        node = self.get("node", NODE)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

    @property
    def containerd_socket(self) -> Path:
        return self.home / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args,
                    check=check, **kwargs)

    def _containerd(self) -> None:
        root = self.home / "containerd"
        cni = self.home / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-shopmesh.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "shopmesh-pods", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                          "dataDir": str(self.home / "ipam")}},
                {"type": "loopback"}]}))
        (self.home / "containerd.toml").write_text(f"""
version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10-shopmesh"
  disable_apparmor = true
  # This machine refuses a process lowering its oom_score_adj, which the kubelet asks for the
  # pause container (-998): runc then fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
""")
        self._spawn("containerd", "containerd", "--config", self.home / "containerd.toml")
        self._until(lambda: self.ctr("version", check=False).returncode == 0, 30, "containerd")
        for image in IMAGES:  # from Podman's store (scripts/build-image.sh) into containerd's
            archive = self.home / "image.tar"
            _run("podman", "save", "--format", "oci-archive", "-o", str(archive), image, timeout=300)
            self.ctr("images", "import", "--all-platforms", str(archive), timeout=300)
            archive.unlink()

    def _coredns(self) -> None:
        (self.home / "Corefile").write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.home / "admin.kubeconfig"} local
        pods insecure
        ttl 5
    }}
    cache 5
}}
""")
        self._spawn("coredns", CLUSTER_BIN / "coredns", "-conf", self.home / "Corefile")

    def _kubelet(self, pki: Path) -> None:
        (self.home / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # pods use clusterDNS, never this
        (self.home / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "cgroupDriver": "cgroupfs", "failSwapOn": False, "failCgroupV1": False,  # this machine: cgroup v1
            "clusterDNS": [NODE_IP], "clusterDomain": "cluster.local",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "resolvConf": str(self.home / "resolv.conf"),
            "enforceNodeAllocatable": [], "localStorageCapacityIsolation": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        }))
        self._spawn("kubelet", CLUSTER_BIN / "kubelet", "--config", self.home / "kubelet.yaml",
                    "--kubeconfig", self.home / "kubelet.kubeconfig", "--hostname-override", NODE,
                    "--node-ip", NODE_IP, "--root-dir", self.home / "kubelet")

    def _kube_proxy(self) -> None:
        """Services' virtual IPs, in nftables mode: kube-proxy's rules live in its own tables
        (`ip kube-proxy`), touching no other rule of this machine's."""
        (self.home / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "nftables", "clientConnection": {"kubeconfig": str(self.home / "admin.kubeconfig")},
            "hostnameOverride": NODE, "clusterCIDR": POD_CIDR, "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }))
        self._spawn("kube-proxy", CLUSTER_BIN / "kube-proxy", "--config", self.home / "kube-proxy.yaml")

    def _metrics_server(self, pki: Path) -> None:
        """metrics-server on the node's address, registered as the API server's metrics.k8s.io
        (an APIService whose Service has no selector: its endpoint is this process), reading
        each kubelet's resource metrics every 10 s: what `kubectl top` and the HPA read."""
        port = free_port()
        self._spawn("metrics-server", CLUSTER_BIN / "metrics-server", "--secure-port", port, "--bind-address", NODE_IP,
                    "--tls-cert-file", pki / "metrics-server.crt", "--tls-private-key-file", pki / "metrics-server.key",
                    "--kubeconfig", self.kubeconfig, "--authentication-kubeconfig", self.kubeconfig,
                    "--authorization-kubeconfig", self.kubeconfig,
                    "--kubelet-use-node-status-port", "--kubelet-preferred-address-types", "InternalIP",
                    "--kubelet-certificate-authority", pki / "ca.crt",
                    "--kubelet-client-certificate", pki / "admin.crt", "--kubelet-client-key", pki / "admin.key",
                    "--metric-resolution", "10s", "--kubelet-request-timeout", "5s")
        ca = base64.b64encode((pki / "ca.crt").read_bytes()).decode()
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics-server", "namespace": "kube-system"},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "metrics-server", "namespace": "kube-system"},
             "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": port}]}]},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta1.metrics.k8s.io"},
             "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "caBundle": ca,
                      "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                      "groupPriorityMinimum": 100, "versionPriority": 100}},
        ]}))
        self._until(self._metrics_served, 60, "metrics.k8s.io served by metrics-server")

    def _metrics_served(self) -> bool:
        service = self.get("apiservice", "v1beta1.metrics.k8s.io")
        return any(c["type"] == "Available" and c["status"] == "True" for c in service.get("status", {}).get("conditions", []))

    def pod_cpu(self, component: str) -> dict[str, str]:
        """Each of a component's pods' CPU as metrics-server reports it (metrics.k8s.io), by pod name."""
        answer = self.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"
                              f"?labelSelector=app.kubernetes.io%2Fname%3D{component}", check=False)
        if answer.returncode != 0:  # not served yet (metrics-server's first scrapes), or not at all
            return {}
        return {p["metadata"]["name"]: p["containers"][0]["usage"]["cpu"] for p in json.loads(answer.stdout)["items"]}

    def metrics_server_state(self) -> str:
        """Why metrics may be missing: the APIService's conditions and metrics-server's last words."""
        service = self.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "jsonpath={.status.conditions}",
                               check=False)
        log = (self.home / "metrics-server.out").read_text(errors="replace")[-3000:]
        return f"\n--- APIService ---\n{service.stdout}{service.stderr}\n--- metrics-server ---\n{log}"

    def _kube_router(self) -> None:
        """NetworkPolicies enforced: kube-router's policy controller alone (no routing, no service
        proxy), on the node, keeping iptables rules and ipsets that match each pod's traffic, as
        the bridge's traffic passes iptables (br_netfilter, bridge-nf-call-iptables). Its rules are
        its own chains (KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*), removed at `stop`."""
        self._spawn("kube-router", CLUSTER_BIN / "kube-router", "--kubeconfig", self.kubeconfig,
                    "--hostname-override", NODE, "--run-firewall=true", "--run-router=false",
                    "--run-service-proxy=false", "--enable-cni=false", "--service-cluster-ip-range", SERVICE_CIDR,
                    "--health-port", free_port(), "--metrics-port", "0")

    def service_ip(self, name: str) -> str:
        return str(self.get("service", name)["spec"]["clusterIP"])

    def _volumes(self) -> None:
        """hostPath PersistentVolumes under the cluster's folder: the node's storage."""
        for n in range(6):
            path = self.home / "volumes" / str(n)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # the pods' users (10001, 999) write here; fsGroup does not apply to hostPath
            self.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"local-{n}"},
                "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)}}}))

    # --- taking it down ---

    def stop(self) -> None:
        for name in ("metrics-server", "kube-router", "kubelet", "kube-proxy", "kube-scheduler",
                     "kube-controller-manager", "coredns"):
            self._stop(name)
        _remove_policy_rules()
        if "containerd" in self.processes:
            for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            time.sleep(1)
            for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "delete", "-f", task, check=False)
            for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
                self.ctr("containers", "delete", container, check=False)
        for name in ("containerd", "kube-apiserver", "etcd"):
            self._stop(name)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.home))]
        for mount in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", mount, check=False)
        if os.path.isdir("/var/run/netns"):
            for netns in set(os.listdir("/var/run/netns")) - self.netns_before:
                if netns.startswith("cni-"):
                    _run("ip", "netns", "del", netns, check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
        for family in ("ip", "ip6"):  # kube-proxy's own tables, and nothing else
            _run("nft", "delete", "table", family, "kube-proxy", check=False)
        shutil.rmtree(self.home / "containerd", ignore_errors=True)

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


POLICY_CHAINS = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")


def _remove_policy_rules() -> None:
    """kube-router's iptables chains and ipsets, and nothing else of this machine's rules (its own
    `--cleanup-config` crashes in v2.1.0, in the service proxy's cleanup, and would also delete
    every IPVS service on the machine)."""
    rules = _run("iptables", "-t", "filter", "-S", check=False).stdout.splitlines()
    for rule in rules:  # the jumps into its chains from the built-in ones
        words = shlex.split(rule)
        if words[:1] == ["-A"] and words[1] in ("INPUT", "FORWARD", "OUTPUT") and any(
                w.startswith(POLICY_CHAINS) for w in words[2:]):
            _run("iptables", "-t", "filter", "-D", *words[1:], check=False)
    chains = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(POLICY_CHAINS)]
    for flag in ("-F", "-X"):  # emptied first: they jump into each other
        for chain in chains:
            _run("iptables", "-t", "filter", flag, chain, check=False)
    for name in _run("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(("KUBE-DST-", "KUBE-SRC-", "kube-router-")):
            _run("ipset", "destroy", name, check=False)


def images_built() -> None:
    """The images the cluster imports, built with Podman from the Dockerfile (cached)."""
    subprocess.run([str(ROOT / "scripts" / "build-image.sh"), "--debian-bases", "--extras"], check=True,
                   capture_output=True, timeout=1800)
