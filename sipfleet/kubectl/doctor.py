"""Pure verdicts for ``kubectl sipfleet doctor``: from what the client read (the CRD, the operator's Deployments
and pods, SubjectAccessReview answers for the operator's ServiceAccount, the agents and the accounts) to a list of
checks, each ``ok``, ``warn`` or ``fail``. ``exit_code`` is 1 when any check fails, else 0.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from sipfleet.api import keys
from sipfleet.api import models as m

from . import objects as o
from .fmt import paint, table


@dataclass(frozen=True)
class Facts:
    crd: dict | None
    crd_error: str | None = None
    operators: list[dict] = field(default_factory=list)  # operator Deployments (chart labels)
    operator_pods: list[dict] = field(default_factory=list)
    operator_error: str | None = None
    rbac: list[dict] = field(default_factory=list)  # rbac.checks() rows + "allowed": bool | None, "reason"
    rbac_subject: str | None = None
    rbac_error: str | None = None
    deployments: list[dict] = field(default_factory=list)  # agent Deployments
    pods: list[dict] = field(default_factory=list)  # agent pods
    accounts: list[dict] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # the namespaces looked at (accounts' or -n)
    client_version: str = m.VERSION


def _c(check: str, status: str, message: str, subject: str = "") -> dict:
    return {"check": check, "subject": subject, "status": status, "message": message}


def watched_namespaces(dep: dict) -> list[str] | None:
    """The operator's SIPFLEET_WATCH_NAMESPACES (names or globs); None: every namespace."""
    raw = o.container_env(dep, keys.ENV_WATCH_NAMESPACES)
    items = [x.strip() for x in (raw or "").split(",") if x.strip()]
    return items or None


def watches(dep: dict, ns: str) -> bool:
    w = watched_namespaces(dep)
    return w is None or any(fnmatch.fnmatchcase(ns, pat) for pat in w)


def crd_checks(f: Facts) -> list[dict]:
    if f.crd is None:
        return [_c("crd", "fail", f"CustomResourceDefinition {m.PLURAL}.{m.GROUP} not found"
                   + (f" ({f.crd_error})" if f.crd_error else ""))]
    versions = (f.crd.get("spec") or {}).get("versions") or []
    served = [v["name"] for v in versions if v.get("served")]
    storage = next((v["name"] for v in versions if v.get("storage")), None)
    established = any(c.get("type") == "Established" and c.get("status") == "True"
                      for c in o.status(f.crd).get("conditions") or [])
    if f.client_version not in served:
        return [_c("crd", "fail", f"this client speaks {m.GROUP}/{f.client_version}; the cluster serves "
                   f"{', '.join(served) or 'nothing'}")]
    if not established:
        return [_c("crd", "fail", f"served {', '.join(served)} but not Established")]
    if storage != f.client_version:
        return [_c("crd", "warn", f"served {', '.join(served)}; storage version {storage}, this client "
                   f"{f.client_version}")]
    return [_c("crd", "ok", f"served {', '.join(served)} (storage {storage}), this client {f.client_version}")]


def operator_checks(f: Facts) -> list[dict]:
    if f.operator_error and not f.operators:
        return [_c("operator", "fail", f"cannot look for the operator: {f.operator_error}")]
    if not f.operators:
        return [_c("operator", "fail", f"no operator Deployment labelled {keys.OPERATOR_SELECTOR} found")]
    out = []
    for d in f.operators:
        ready, want = o.deployment_ready(d)
        subject = f"{o.namespace(d)}/{o.name(d)}"
        pods = [p for p in f.operator_pods if o.namespace(p) == o.namespace(d)]
        why = []
        for p in pods:
            why += [f"{o.name(p)}: {r}" for _, r, _ in o.pod_waiting(p)]
            u = o.pod_unschedulable(p)
            if u:
                why.append(f"{o.name(p)} unschedulable: {u.get('message')}")
        w = watched_namespaces(d)
        scope = "all namespaces" if w is None else ",".join(w)
        if want >= 1 and ready >= want:
            out.append(_c("operator", "ok", f"{ready}/{want} Ready, watches {scope}", subject))
        else:
            out.append(_c("operator", "fail", f"{ready}/{want} Ready" + (f" ({'; '.join(why)})" if why else ""),
                          subject))
    for ns in f.namespaces:
        if not any(watches(d, ns) for d in f.operators):
            out.append(_c("operator", "fail", "no operator watches this namespace", ns))
    return out


def rbac_checks(f: Facts) -> list[dict]:
    if f.rbac_error:
        return [_c("rbac", "warn", f"cannot check the operator's permissions: {f.rbac_error}", f.rbac_subject or "")]
    if not f.rbac:
        return []
    missing = [r for r in f.rbac if r["allowed"] is False and r["required"]]
    optional = [r for r in f.rbac if r["allowed"] is False and not r["required"]]
    unknown = [r for r in f.rbac if r["allowed"] is None]

    def say(r: dict) -> str:
        res = f"{r['resource']}.{r['group']}" if r["group"] else r["resource"]
        return f"{r['verb']} {res}" + (f" in {r['namespace']}" if r["namespace"] else " (cluster)")

    out = []
    if missing:
        out.append(_c("rbac", "fail", "may not " + "; ".join(say(r) for r in missing), f.rbac_subject or ""))
    if optional:
        out.append(_c("rbac", "warn", "no cluster discovery (kopf falls back to the configured namespaces): "
                      + "; ".join(say(r) for r in optional), f.rbac_subject or ""))
    if unknown:
        out.append(_c("rbac", "warn", "could not ask: " + "; ".join(say(r) for r in unknown), f.rbac_subject or ""))
    if not out:
        nss = sorted({r["namespace"] for r in f.rbac if r["namespace"]})
        out.append(_c("rbac", "ok", f"{len(f.rbac)} permissions granted (namespaces {', '.join(nss) or '-'})",
                      f.rbac_subject or ""))
    return out


def agent_checks(f: Facts) -> list[dict]:
    out = []
    for d in f.deployments:
        ready, want = o.deployment_ready(d)
        subject = f"{o.namespace(d)}/{o.name(d)}"
        if ready < want:
            out.append(_c("agent", "fail", f"{ready}/{want} Ready (accounts {','.join(o.owned_accounts(d)) or '-'})",
                          subject))
    for p in f.pods:
        subject = f"{o.namespace(p)}/{o.name(p)}"
        u = o.pod_unschedulable(p)
        if u:
            out.append(_c("agent", "fail", f"unschedulable: {u.get('message') or u.get('reason')}", subject))
        for container, reason, msg in o.pod_waiting(p):
            out.append(_c("agent", "fail", f"{container} {reason}" + (f": {msg}" if msg else ""), subject))
        restarts = o.pod_restarts(p)
        if restarts and not o.pod_waiting(p):
            t = o.last_termination(p) or {}
            last = f" (last: {t.get('reason')}, exit {t.get('exitCode')})" if t else ""
            out.append(_c("agent", "warn", f"{restarts} restarts{last}", subject))
    if not out:
        out.append(_c("agent", "ok", f"{len(f.deployments)} agents Ready, {len(f.pods)} pods"))
    return out


def account_checks(f: Facts) -> list[dict]:
    out = []
    for a in f.accounts:
        subject = f"{o.namespace(a)}/{o.name(a)}"
        c = o.condition(a, "Ready")
        if c is None:
            out.append(_c("account", "fail", "no conditions yet (is an operator serving this namespace?)", subject))
        elif c.get("status") != "True":
            status = "warn" if c.get("reason") == "Paused" else "fail"
            out.append(_c("account", status, f"Ready={c.get('status')} {c.get('reason')}: {c.get('message') or ''}"
                          .rstrip(": "), subject))
    if not out:
        out.append(_c("account", "ok", f"{len(f.accounts)} accounts Ready"))
    return out


def verdicts(f: Facts) -> list[dict]:
    return crd_checks(f) + operator_checks(f) + rbac_checks(f) + agent_checks(f) + account_checks(f)


def exit_code(checks: list[dict]) -> int:
    return 1 if any(c["status"] == "fail" for c in checks) else 0


_COLOUR = {"ok": "green", "warn": "yellow", "fail": "red"}


def render(checks: list[dict], colour: bool = False) -> str:
    rows = [[c["check"], (c["status"].upper(), _COLOUR[c["status"]]), c["subject"] or "-", c["message"]]
            for c in checks]
    fails = sum(c["status"] == "fail" for c in checks)
    warns = sum(c["status"] == "warn" for c in checks)
    summary = (paint(f"{fails} problem(s)", "red", colour) if fails else paint("all good", "green", colour)) \
        + (f", {warns} warning(s)" if warns else "")
    return table(["CHECK", "STATUS", "SUBJECT", "MESSAGE"], rows, colour) + "\n\n" + summary
