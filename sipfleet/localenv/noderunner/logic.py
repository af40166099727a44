"""Pure pieces of the node runner: env resolution, $(VAR) expansion, back-off, IP allocation, pod phase.

Nothing here talks to the API or starts processes; the unit tests exercise these functions directly.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import threading
from typing import Any, Callable, Iterable, Mapping

# --------------------------------------------------------------------------------------------- back-off

#: Kubernetes' container restart back-off: 10 s, doubling, capped at 5 min
DEFAULT_BACKOFF_BASE = 10.0
DEFAULT_BACKOFF_CAP = 300.0


def backoff_delay(failures: int, base: float = DEFAULT_BACKOFF_BASE, cap: float = DEFAULT_BACKOFF_CAP) -> float:
    """Seconds to wait before restart number ``failures`` (1 = first restart): base, 2*base, 4*base, ... cap."""
    if failures <= 0:
        return 0.0
    # avoid float overflow for absurd counts
    exp = min(failures - 1, 62)
    return float(min(cap, base * (2 ** exp)))


def backoff_reset_after(cap: float = DEFAULT_BACKOFF_CAP) -> float:
    """A container that ran this long without failing starts its back-off afresh (kubelet: 2 x the cap)."""
    return 2 * cap


# --------------------------------------------------------------------------------------------- IPs


def parse_pod_subnet(text: str) -> ipaddress.IPv4Network:
    """``127.0.101`` -> 127.0.101.0/24, ``127.5`` -> 127.5.0.0/16, ``127.0.101.0/24`` as given.

    The subnet must lie inside 127.0.0.0/8 (everything here stays on loopback).
    """
    text = text.strip()
    if "/" in text:
        net = ipaddress.IPv4Network(text, strict=False)
    else:
        parts = [p for p in text.split(".") if p != ""]
        if not 1 <= len(parts) <= 4:
            raise ValueError(f"bad pod subnet {text!r}")
        prefix = 8 * len(parts) if len(parts) < 4 else 24
        padded = parts + ["0"] * (4 - len(parts))
        net = ipaddress.IPv4Network(".".join(padded) + f"/{prefix}", strict=False)
    if not net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise ValueError(f"pod subnet {text!r} is not inside 127.0.0.0/8")
    return net


class IPAllocator:
    """Hands out one loopback address per pod key from a subnet.

    Skips addresses ending in .0 or .255 and 127.0.0.1. Allocation continues after the last address handed
    out (wrapping around), so a freed address is re-used, but not immediately (like host-local IPAM): a
    freshly deleted pod's stragglers do not meet a new pod on the same address.
    """

    def __init__(self, subnet: str | ipaddress.IPv4Network):
        self.network = subnet if isinstance(subnet, ipaddress.IPv4Network) else parse_pod_subnet(subnet)
        self._first = int(self.network.network_address)
        self._last = int(self.network.broadcast_address)
        self._next = self._first
        self._by_key: dict[str, str] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _usable(addr: ipaddress.IPv4Address) -> bool:
        last_octet = int(addr) & 0xFF
        return last_octet not in (0, 255) and str(addr) != "127.0.0.1"

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self.network
        except ValueError:
            return False

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._by_key.get(key)

    def reserve(self, key: str, ip: str) -> bool:
        """Claim a specific address for key (adoption after a restart); False if not possible."""
        with self._lock:
            if self._by_key.get(key) == ip:
                return True
            if not self.contains(ip) or ip in self._used or not self._usable(ipaddress.IPv4Address(ip)):
                return False
            if key in self._by_key:
                self._used.discard(self._by_key[key])
            self._by_key[key] = ip
            self._used.add(ip)
            return True

    def allocate(self, key: str) -> str:
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            size = self._last - self._first + 1
            for _ in range(size):
                cand = self._next
                self._next = self._first if self._next >= self._last else self._next + 1
                addr = ipaddress.IPv4Address(cand)
                ip = str(addr)
                if self._usable(addr) and ip not in self._used:
                    self._by_key[key] = ip
                    self._used.add(ip)
                    return ip
            raise RuntimeError(f"pod subnet {self.network} is exhausted")

    def release(self, key: str) -> None:
        with self._lock:
            ip = self._by_key.pop(key, None)
            if ip is not None:
                self._used.discard(ip)

    def in_use(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_key)


# --------------------------------------------------------------------------------------------- env


class ConfigError(Exception):
    """A container's configuration cannot be resolved yet (CreateContainerConfigError); retried."""

    reason = "CreateContainerConfigError"


_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $(VAR) -> value if VAR is defined (else left as is), $$ -> $."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append(text[i:])
                break
            name = text[i + 2:close]
            if name in env:
                out.append(env[name])
            else:
                out.append(text[i:close + 1])
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    for k, v in (secret.get("stringData") or {}).items():
        data[k] = v.encode()
    return data


def configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    for k, v in (cm.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    return data


_LABEL_REF_RE = re.compile(r"^metadata\.(labels|annotations)\[['\"]?(.+?)['\"]?\]$")


def _format_map(m: Mapping[str, str]) -> str:
    # the downward API's file format for labels/annotations: key="escaped value" per line, sorted
    return "\n".join(f'{k}="{_escape(v)}"' for k, v in sorted(m.items()))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def field_ref_value(pod: Mapping[str, Any], field_path: str, pod_ip: str | None, host_ip: str = "127.0.0.1") -> str:
    """The downward API value of ``field_path`` for a pod (env fieldRef and downwardAPI volume items)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if field_path == "metadata.name":
        return meta.get("name", "")
    if field_path == "metadata.namespace":
        return meta.get("namespace", "")
    if field_path == "metadata.uid":
        return meta.get("uid", "")
    if field_path == "metadata.labels":
        return _format_map(meta.get("labels") or {})
    if field_path == "metadata.annotations":
        return _format_map(meta.get("annotations") or {})
    m = _LABEL_REF_RE.match(field_path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if field_path == "spec.nodeName":
        return spec.get("nodeName", "")
    if field_path == "spec.serviceAccountName":
        return spec.get("serviceAccountName") or spec.get("serviceAccount") or ""
    if field_path in ("status.podIP", "status.podIPs"):
        return pod_ip or ""
    if field_path in ("status.hostIP", "status.hostIPs"):
        return host_ip
    raise ConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


def resource_field_value(container: Mapping[str, Any], resource: str, node_capacity: Mapping[str, str]) -> str:
    """resourceFieldRef without divisor arithmetic: the container's value as written, else node capacity."""
    kind, _, name = resource.partition(".")
    res = (container.get("resources") or {})
    value = (res.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (res.get("limits") or {}).get(name)
    if value is None:
        value = node_capacity.get(name, "0")
    return str(value)


Getter = Callable[[str, str], "Mapping[str, Any] | None"]


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    get_secret: Getter,
    get_configmap: Getter,
    pod_ip: str | None,
    service_env: Mapping[str, str] | None = None,
    node_capacity: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it.

    ``service_env`` (KUBERNETES_SERVICE_HOST, ...) comes first, then ``envFrom`` sources in order, then
    ``env`` entries in order, each value $(VAR)-expanded against what is defined so far.
    ``get_secret(namespace, name)`` / ``get_configmap`` return the object or None when it does not exist.
    Raises ConfigError for a missing non-optional Secret/ConfigMap or key.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    node_capacity = node_capacity or {}
    env: dict[str, str] = dict(service_env or {})
    cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    def source(kind: str, name: str) -> dict[str, bytes] | None:
        key = (kind, name)
        if key not in cache:
            if kind == "Secret":
                obj = get_secret(ns, name)
                cache[key] = None if obj is None else decode_secret_data(obj)
            else:
                obj = get_configmap(ns, name)
                cache[key] = None if obj is None else configmap_data(obj)
        return cache[key]

    for ef in container.get("envFrom") or []:
        prefix = ef.get("prefix") or ""
        for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            ref = ef.get(field)
            if ref is None:
                continue
            name = ref.get("name", "")
            data = source(kind, name)
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{name}" not found')
            for k, v in data.items():
                var = prefix + k
                if _ENV_NAME_RE.match(var):  # invalid names are skipped (Kubernetes emits an event)
                    env[var] = v.decode(errors="replace")

    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item or item.get("valueFrom") is None:
            env[name] = expand(item.get("value") or "", env)
            continue
        vf = item["valueFrom"]
        if vf.get("secretKeyRef") or vf.get("configMapKeyRef"):
            kind, ref = ("Secret", vf["secretKeyRef"]) if vf.get("secretKeyRef") else ("ConfigMap", vf["configMapKeyRef"])
            data = source(kind, ref.get("name", ""))
            optional = bool(ref.get("optional"))
            if data is None:
                if optional:
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            key = ref.get("key", "")
            if key not in data:
                if optional:
                    continue
                raise ConfigError(f'couldn\'t find key {key} in {kind} {ns}/{ref.get("name", "")}')
            env[name] = data[key].decode(errors="replace")
        elif vf.get("fieldRef"):
            env[name] = field_ref_value(pod, vf["fieldRef"]["fieldPath"], pod_ip)
        elif vf.get("resourceFieldRef"):
            env[name] = resource_field_value(container, vf["resourceFieldRef"]["resource"], node_capacity)
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
    return env


def expand_argv(argv: Iterable[str], env: Mapping[str, str]) -> list[str]:
    return [expand(a, env) for a in argv]


# --------------------------------------------------------------------------------------------- phase


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def pod_phase(restart_policy: str, states: list[dict[str, Any]], initialized: bool = True) -> str:
    """Pod phase from container states (the kubelet's getPhase), each state a dict
    ``{"state": "waiting"|"running"|"terminated", "exitCode": n, "ever_started": bool}``.

    * Pending: init containers not done, or a container that never ran is waiting (image/config errors)
    * Running: a container is running; or all stopped but some will be restarted
    * Succeeded: all terminated with exit code 0 and none will restart
    * Failed: all stopped, at least one non-zero, none will restart
    """
    if not states or not initialized:
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for s in states:
        if s["state"] == "running":
            running += 1
        elif s["state"] == "terminated":
            stopped += 1
            if s.get("exitCode", 0) == 0:
                succeeded += 1
        elif s.get("ever_started"):
            stopped += 1  # waiting to be restarted (back-off)
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "OnFailure":
            return "Running"
        return "Failed"
    return "Pending"
