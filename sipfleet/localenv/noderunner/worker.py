"""One thread per Pod: set up its sandbox (IP, volumes), run its containers, probe them, report status,
restart them with back-off, and tear everything down when the Pod is deleted."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import images
from .kube import STRATEGIC, KubeError, now_time
from .logic import ConfigError, backoff_delay, backoff_reset_after, expand_argv, pod_phase, resolve_env, should_restart
from .probes import run_probe
from .process import signal_group, spawn
from .volumes import VolumeError, VolumeManager

if TYPE_CHECKING:  # pragma: no cover
    from .runner import NodeRunner

log = logging.getLogger("sipfleet.noderunner.pod")

TICK = 0.5


@dataclass
class Container:
    spec: dict
    init: bool = False
    proc: subprocess.Popen | None = None
    pid: int | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restart_count: int = 0
    failures: int = 0
    next_start: float = 0.0
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    ever_started: bool = False
    container_id: str | None = None
    env: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)
    image_errors: int = 0
    config_errors: int = 0
    kill_reason: str | None = None
    kill_deadline: float | None = None
    done: bool = False  # init container completed successfully

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None

    def state_kind(self) -> str:
        return next(iter(self.state))

    def status(self) -> dict:
        st: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.spec.get("image", ""),
            "imageID": images.image_id(self.spec.get("image", "")) if self.ever_started else "",
            "started": self.started if self.running else False,
        }
        if self.container_id:
            st["containerID"] = self.container_id
        return st


class PodWorker(threading.Thread):
    def __init__(self, runner: "NodeRunner", pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.key = f"{self.namespace}/{self.pod_name}/{self.uid}"
        self.dir: Path = runner.state_dir / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.cv = threading.Condition()
        self.gone = False
        self.shutting_down = False
        self._waited = False  # the first sync runs at once
        self.ip: str | None = None
        self.vm = VolumeManager(self.dir, runner, runner.node_capacity)
        self.volumes_ready = False
        self.volume_error: str | None = None
        self.volume_retry = 0.0
        self.volume_failures = 0
        self.initialized = False
        self.init_failed = False
        self.start_time: str | None = None
        self.conditions: dict[str, dict] = {}
        self.last_published: str | None = None
        self.publish_retry = 0.0
        self._events: dict[tuple[str, str, str], float] = {}
        self.publish_failures = 0
        self.terminal = False
        self.adopted_terminal = False
        spec = pod["spec"]
        self.containers = [Container(spec=c) for c in spec.get("containers") or []]
        self.init_containers = [Container(spec=c, init=True) for c in spec.get("initContainers") or []]
        self._adopt(pod)

    # ------------------------------------------------------------------ events from the runner

    def update(self, pod: dict) -> None:
        with self.cv:
            self.pod = pod
            self.cv.notify()

    def mark_gone(self) -> None:
        with self.cv:
            self.gone = True
            self.cv.notify()

    def shutdown(self) -> None:
        with self.cv:
            self.shutting_down = True
            self.cv.notify()

    # ------------------------------------------------------------------ adoption after a runner restart

    def _adopt(self, pod: dict) -> None:
        status = pod.get("status") or {}
        self.start_time = status.get("startTime")
        ip = status.get("podIP")
        if ip and self.runner.ipam.reserve(self.key, ip):
            self.ip = ip
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        if status.get("phase") in ("Succeeded", "Failed"):
            self.terminal = True
            self.adopted_terminal = True
        for c_list, field_name in ((self.containers, "containerStatuses"), (self.init_containers, "initContainerStatuses")):
            prev = {s["name"]: s for s in status.get(field_name) or []}
            for c in c_list:
                s = prev.get(c.name)
                if not s:
                    continue
                c.restart_count = int(s.get("restartCount") or 0)
                state = s.get("state") or {}
                if "running" in state or "terminated" in state or (s.get("lastState") or {}).get("terminated"):
                    c.ever_started = True
                    c.container_id = s.get("containerID")
                if "terminated" in state:
                    term = state["terminated"]
                    c.state = state
                    c.last_state = s.get("lastState") or {}
                    if c.init and term.get("exitCode") == 0:
                        c.done = True
                elif "running" in state:
                    # the process belonged to a previous runner and is gone now
                    term = {
                        "exitCode": 137,
                        "reason": "Unknown",
                        "message": "the node runner restarted; the container's process is gone",
                        "startedAt": state["running"].get("startedAt"),
                        "finishedAt": now_time(),
                        "containerID": s.get("containerID"),
                    }
                    c.state = {"terminated": term}
                else:
                    continue
                if self.terminal or c.done:
                    continue
                code = int(term.get("exitCode") or 0)
                restart = (policy != "Never" and code != 0) if c.init else should_restart(policy, code)
                if restart:
                    c.last_state = {"terminated": term}
                    c.state = {"waiting": {"reason": "ContainerCreating", "message": "restarting after node runner restart"}}
        if self.init_containers and all(c.done for c in self.init_containers):
            self.initialized = True
        if not self.init_containers and any(c.ever_started for c in self.containers):
            self.initialized = True

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:  # noqa: BLE001 - a worker never dies of a bug; it retries
                log.exception("%s: sync failed", self.key)
                time.sleep(1)

    def _step(self) -> bool:
        with self.cv:
            if self._waited:
                self.cv.wait(TICK)
            self._waited = True
            pod = self.pod
            gone = self.gone
            shutting_down = self.shutting_down
        if shutting_down:
            self._kill_all(min(self._grace(pod), self.runner.shutdown_grace), "node runner stopping")
            return True
        if gone:
            self._kill_all(2, "pod deleted")
            self._cleanup()
            return True
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate_and_delete(pod)
            return True
        self._reap()
        if not self.terminal:
            self._sync(pod)
        self._publish(pod)
        return False

    def _grace(self, pod: dict) -> float:
        g = pod["metadata"].get("deletionGracePeriodSeconds")
        if g is None:
            g = pod["spec"].get("terminationGracePeriodSeconds")
        return float(30 if g is None else g)

    # ------------------------------------------------------------------ sync

    def _sync(self, pod: dict) -> None:
        now = time.monotonic()
        if self.start_time is None:
            self.start_time = now_time()
        if self.ip is None:
            if pod["spec"].get("hostNetwork"):
                self.ip = self.runner.host_ip  # the host's address, as for a hostNetwork pod
            else:
                self.ip = self.runner.ipam.allocate(self.key)
        if now >= self.volume_retry and (not self.volumes_ready or self.vm.needs_refresh()):
            try:
                self.vm.setup(pod, self.ip)
                self.volumes_ready = True
                self.volume_error = None
                self.volume_failures = 0
            except VolumeError as e:
                self.volume_failures += 1
                self.volume_retry = now + min(2 ** self.volume_failures, 30)
                if not self.volumes_ready:
                    self.volume_error = str(e)
                    for c in self.init_containers + self.containers:
                        if not c.running and not c.ever_started:
                            c.state = {"waiting": {"reason": "ContainerCreating", "message": str(e)}}
                if self.volume_failures == 1 or self.volume_failures % 10 == 0:
                    log.warning("%s: volumes: %s", self.key, e)
            except Exception as e:  # noqa: BLE001 - API errors (a 403 until the Node authorizer saw the pod): retry
                self.volume_failures += 1
                self.volume_retry = now + min(self.volume_failures, 10)
                log.warning("%s: volumes: %s", self.key, e)
        if not self.volumes_ready:
            return
        policy = pod["spec"].get("restartPolicy") or "Always"
        if not self.initialized:
            for c in self.init_containers:
                if c.done:
                    continue
                if c.running:
                    break
                if self.init_failed:
                    break
                if "terminated" in c.state and c.state["terminated"].get("exitCode", 0) != 0 and policy == "Never":
                    self.init_failed = True
                    break
                if now >= c.next_start:
                    self._start(pod, c)
                break
            if self.init_containers and all(c.done for c in self.init_containers):
                self.initialized = True
            elif not self.init_containers:
                self.initialized = True
        if self.initialized:
            for c in self.containers:
                if c.running:
                    continue
                if c.ever_started and "terminated" in c.state:
                    continue  # finished for good (restart policy)
                if now >= c.next_start:
                    self._start(pod, c)
        self._probe_all(pod)

    def _service_env(self, c: Container, entry: images.ImageEntry | None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": "/root",
            "HOSTNAME": self.pod_name,
        }
        for k in ("LANG", "LC_ALL", "TZ"):
            if k in os.environ:
                env[k] = os.environ[k]
        if entry is not None:
            env.update(entry.env)
        env.update(self.runner.service_env)
        return env

    def _start(self, pod: dict, c: Container) -> None:
        now = time.monotonic()
        image = c.spec.get("image", "")
        try:
            entry = images.lookup(image)
            argv = images.resolve_argv(image, c.spec.get("command"), c.spec.get("args"))
            c.image_errors = 0
        except (images.UnknownImage, images.NoCommand) as e:
            c.image_errors += 1
            reason = "ErrImagePull" if c.image_errors == 1 else "ImagePullBackOff"
            c.state = {"waiting": {"reason": reason, "message": str(e)}}
            c.next_start = now + backoff_delay(c.image_errors, self.runner.backoff_base, self.runner.backoff_cap)
            if c.image_errors == 1:
                log.warning("%s/%s: %s", self.key, c.name, e)
                self._event(c, "Warning", "Failed", f"Failed to pull image \"{image}\": {e}")
            else:
                self._event(c, "Normal", "BackOff", f"Back-off pulling image \"{image}\"")
            return
        try:
            env = resolve_env(
                pod,
                c.spec,
                get_secret=self.runner.get_secret,
                get_configmap=self.runner.get_configmap,
                pod_ip=self.ip,
                service_env=self._service_env(c, entry),
                node_capacity=self.runner.node_capacity,
            )
            mounts = self.vm.mounts_for(c.spec)
            c.config_errors = 0
        except (ConfigError, VolumeError) as e:
            c.config_errors += 1
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = now + min(2 ** c.config_errors, 10)
            if c.config_errors == 1:
                log.warning("%s/%s: %s", self.key, c.name, e)
            self._event(c, "Warning", "Failed", f"Error: {e}")
            return
        except KubeError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": f"API error: {e}"}}
            c.next_start = now + 1
            return
        raw_argv = argv  # logged and recorded unexpanded: $(VAR) may hold a secret
        argv = expand_argv(argv, env)
        workdir = c.spec.get("workingDir") or str(self.dir / "work")
        os.makedirs(workdir, exist_ok=True)
        log_file = self.dir / f"{c.name}.log"
        if log_file.exists():
            os.replace(log_file, self.dir / f"{c.name}.previous.log")
        try:
            proc = spawn(argv, env, workdir, mounts, log_file)
        except OSError as e:
            c.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
            c.failures += 1
            c.next_start = now + backoff_delay(c.failures, self.runner.backoff_base, self.runner.backoff_cap)
            return
        if c.ever_started:
            c.restart_count += 1
            if "terminated" in c.state:
                c.last_state = {"terminated": c.state["terminated"]}
        c.proc = proc
        c.pid = proc.pid
        c.env = env
        c.ever_started = True
        c.started_at = now_time()
        c.started_mono = time.monotonic()
        c.container_id = f"sipfleet://{proc.pid}"
        c.state = {"running": {"startedAt": c.started_at}}
        c.ready = False
        c.started = not c.spec.get("startupProbe")
        c.probes = {}
        c.kill_reason = None
        c.kill_deadline = None
        self.runner.pids.add(
            proc.pid,
            {
                "name": f"{self.namespace}/{self.pod_name}/{c.name}",
                "namespace": self.namespace,
                "pod": self.pod_name,
                "uid": self.uid,
                "container": c.name,
                "cmd": raw_argv,
                "log": str(log_file),
            },
        )
        shown = shlex.join(raw_argv)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        log.info("%s/%s: started pid %d: %s", self.key, c.name, proc.pid, shown.replace("\n", "\\n"))
        self._event(c, "Normal", "Started", f"Started container {c.name}")

    def _event(self, c: Container | None, typ: str, reason: str, message: str) -> None:
        """An Event for the pod, without repeating the same one within a minute."""
        key = (c.name if c else "", reason, message)
        now = time.monotonic()
        if now - self._events.get(key, -1e9) < 60:
            return
        self._events[key] = now
        fp = None
        if c is not None:
            fp = f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"
        self.runner.event(self.pod, typ, reason, message, fp)

    # ------------------------------------------------------------------ exits

    def _reap(self) -> None:
        now = time.monotonic()
        policy = self.pod["spec"].get("restartPolicy") or "Always"
        for c in self.init_containers + self.containers:
            if c.proc is None:
                continue
            if c.kill_deadline is not None and now >= c.kill_deadline:
                signal_group(c.proc.pid, signal.SIGKILL)
                c.kill_deadline = None
            rc = c.proc.poll()
            if rc is None:
                continue
            self._finished(c, rc, policy)

    def _finished(self, c: Container, rc: int, policy: str) -> None:
        pid = c.proc.pid if c.proc else c.pid
        if pid:
            signal_group(pid, signal.SIGKILL)  # stragglers of the container's process group
            self.runner.pids.remove(pid)
        exit_code = rc if rc >= 0 else 128 - rc
        reason = "Completed" if exit_code == 0 else "Error"
        term = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": c.started_at,
            "finishedAt": now_time(),
            "containerID": c.container_id,
        }
        if c.kill_reason:
            term["message"] = c.kill_reason
        log.info("%s/%s: pid %s exited with %d", self.key, c.name, pid, exit_code)
        ran_for = time.monotonic() - c.started_mono
        c.proc = None
        c.ready = False
        c.started = False
        c.kill_deadline = None
        c.state = {"terminated": term}
        if ran_for >= backoff_reset_after(self.runner.backoff_cap):
            c.failures = 0
        if c.init:
            if exit_code == 0:
                c.done = True
                return
            restart = policy != "Never"
        elif c.kill_reason:
            restart = policy != "Never"  # killed for a failed liveness/startup probe
        else:
            restart = should_restart(policy, exit_code)
        if restart and not self.shutting_down:
            c.failures += 1
            delay = backoff_delay(c.failures, self.runner.backoff_base, self.runner.backoff_cap)
            c.next_start = time.monotonic() + delay
            c.last_state = {"terminated": term}
            self._event(c, "Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod "
                        f"{self.pod_name}_{self.namespace}({self.uid})")
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {int(delay)}s restarting failed container={c.name} "
                    f"pod={self.pod_name}_{self.namespace}({self.uid})",
                }
            }

    # ------------------------------------------------------------------ probes

    def _probe_all(self, pod: dict) -> None:
        now = time.monotonic()
        for c in self.containers:
            if not c.running or c.kill_deadline is not None:
                continue
            if not c.started:
                sp = c.spec.get("startupProbe")
                if sp and self._probe(c, "startup", sp, now) == "fail":
                    self._kill_container(c, pod, "Container failed startup probe, will be restarted")
                    continue
                if not c.started:
                    continue
            lp = c.spec.get("livenessProbe")
            if lp and self._probe(c, "liveness", lp, now) == "fail":
                self._kill_container(c, pod, "Container failed liveness probe, will be restarted")
                continue
            rp = c.spec.get("readinessProbe")
            if rp:
                r = self._probe(c, "readiness", rp, now)
                if r == "ok":
                    c.ready = True
                elif r == "fail":
                    c.ready = False
            else:
                c.ready = True

    def _probe(self, c: Container, kind: str, spec: dict, now: float) -> str | None:
        """Run the probe if due; 'ok' once successThreshold is met, 'fail' once failureThreshold is met."""
        st = c.probes.get(kind)
        if st is None:
            st = {"next": c.started_mono + float(spec.get("initialDelaySeconds") or 0), "succ": 0, "fail": 0}
            c.probes[kind] = st
        if now < st["next"]:
            return None
        st["next"] = now + float(spec.get("periodSeconds") or 10)
        ok, msg = run_probe(spec, c.spec, self.ip or "127.0.0.1", c.pid, c.env)
        if ok:
            st["succ"] += 1
            st["fail"] = 0
            need = int(spec.get("successThreshold") or 1)
            if kind == "startup":
                c.started = True
            return "ok" if st["succ"] >= need else None
        st["fail"] += 1
        st["succ"] = 0
        threshold = int(spec.get("failureThreshold") or 3)
        if st["fail"] == threshold or (st["fail"] > threshold and st["fail"] % 30 == 0):
            log.info("%s/%s: %s probe failed %d times: %s", self.key, c.name, kind, st["fail"], msg)
            self._event(c, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {msg}"[:500])
        else:
            log.debug("%s/%s: %s probe failed (%d): %s", self.key, c.name, kind, st["fail"], msg)
        return "fail" if st["fail"] >= threshold else None

    def _kill_container(self, c: Container, pod: dict, reason: str) -> None:
        if c.proc is None:
            return
        log.info("%s/%s: %s", self.key, c.name, reason)
        self._event(c, "Normal", "Killing", reason)
        c.kill_reason = reason
        c.ready = False
        signal_group(c.proc.pid, signal.SIGTERM)
        c.kill_deadline = time.monotonic() + float(pod["spec"].get("terminationGracePeriodSeconds") or 30)

    # ------------------------------------------------------------------ termination

    def _kill_all(self, grace: float, why: str) -> None:
        live = [c for c in self.init_containers + self.containers if c.proc is not None]
        if not live:
            return
        log.info("%s: stopping %d container(s) (%s, grace %.0fs)", self.key, len(live), why, grace)
        if why == "pod deleted":
            for c in live:
                self._event(c, "Normal", "Killing", f"Stopping container {c.name}")
        for c in live:
            signal_group(c.proc.pid, signal.SIGTERM)
        start = time.monotonic()
        deadline = start + grace
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in live):
            if self.shutting_down and time.monotonic() - start >= self.runner.shutdown_grace:
                break  # the runner is stopping: its own shorter grace wins
            time.sleep(0.1)
        for c in live:
            if c.proc.poll() is None:
                signal_group(c.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in live):
            time.sleep(0.1)
        policy = "Never"  # nothing restarts now
        self.shutting_down = True if why == "node runner stopping" else self.shutting_down
        for c in live:
            rc = c.proc.poll()
            self._finished(c, rc if rc is not None else -9, policy)

    def _terminate_and_delete(self, pod: dict) -> None:
        self._kill_all(self._grace(pod), "pod deleted")
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}"
        delay = 1.0
        while not self.shutting_down:
            try:
                self.runner.kube.request("DELETE", path, body=body)
                break
            except KubeError as e:
                if e.status in (404, 409):
                    break
                log.warning("%s: delete failed: %s", self.key, e)
            except Exception as e:  # noqa: BLE001
                log.warning("%s: delete failed: %s", self.key, e)
            time.sleep(delay)
            delay = min(delay * 2, 15)
        self._cleanup()

    def _cleanup(self) -> None:
        self.runner.ipam.release(self.key)
        self.vm.cleanup()
        shutil.rmtree(self.dir / "work", ignore_errors=True)
        self.runner.forget(self.uid)

    # ------------------------------------------------------------------ status

    def _condition(self, typ: str, ok: bool, reason: str | None = None) -> dict:
        status = "True" if ok else "False"
        prev = self.conditions.get(typ)
        if prev is None or prev["status"] != status or prev.get("reason") != reason:
            # reason/message always present: null deletes a stale value in the strategic merge patch
            cond = {"type": typ, "status": status, "lastProbeTime": None, "lastTransitionTime": now_time(),
                    "reason": reason, "message": None}
            self.conditions[typ] = cond
        return self.conditions[typ]

    def _status(self, pod: dict) -> dict:
        policy = pod["spec"].get("restartPolicy") or "Always"
        if self.adopted_terminal:
            return {}
        states = [
            {"state": c.state_kind(), "exitCode": c.state.get("terminated", {}).get("exitCode", 0), "ever_started": c.ever_started}
            for c in self.containers
        ]
        if self.init_failed:
            phase = "Failed"
        else:
            phase = pod_phase(policy, states, self.initialized)
        if phase in ("Succeeded", "Failed"):
            self.terminal = True
        containers_ready = bool(self.containers) and all(c.ready for c in self.containers)
        done = phase in ("Succeeded", "Failed")
        if done:
            ready_reason = "PodCompleted"
        elif not containers_ready:
            ready_reason = "ContainersNotReady"
        else:
            ready_reason = None
        conds = [
            self._condition("PodReadyToStartContainers", self.volumes_ready and self.ip is not None),
            self._condition("Initialized", self.initialized or done, None if self.initialized else "ContainersNotInitialized"),
            self._condition("ContainersReady", containers_ready and not done, ready_reason),
            self._condition("Ready", containers_ready and not done, ready_reason),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.runner.host_ip,
            "hostIPs": [{"ip": self.runner.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.ip:
            status["podIP"] = self.ip
            # replace, not merge by ip: a re-addressed pod (another --pod-subnet after a restart) has one IP
            status["podIPs"] = [{"$patch": "replace"}, {"ip": self.ip}]
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        status["message"] = self.volume_error if (self.volume_error and not self.volumes_ready) else None
        return status

    def _publish(self, pod: dict) -> None:
        status = self._status(pod)
        if not status:
            return
        text = json.dumps(status, sort_keys=True)
        if text == self.last_published or time.monotonic() < self.publish_retry:
            return
        body = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self.runner.kube.request(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                body=body,
                content_type=STRATEGIC,
            )
            self.last_published = text
            self.publish_failures = 0
        except KubeError as e:
            if e.status in (404, 409):  # gone, or the name now belongs to a pod with another uid
                self.mark_gone()
            else:
                self._publish_failed(e)
        except Exception as e:  # noqa: BLE001
            self._publish_failed(e)

    def _publish_failed(self, e: Exception) -> None:
        self.publish_failures += 1
        self.publish_retry = time.monotonic() + min(2 ** (self.publish_failures - 1), 30) * 0.5
        if self.publish_failures == 1 or self.publish_failures % 10 == 0:
            log.warning("%s: status patch failed (%d): %s", self.key, self.publish_failures, e)
