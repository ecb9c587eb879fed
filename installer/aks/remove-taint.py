"""Removes pullgate's node-init taint from this pod's own node once pullgate verifies its pulls.

New AKS nodes start with the taint pullgate.dev/not-ready=true:NoSchedule (the node pool's
--node-init-taints), so nothing is scheduled onto them before pullgate is wired. This pod runs on
the node's network and waits until pullgate's /readyz answers 200 and its /metrics count a CRI
call from kubelet (proof that kubelet talks to pullgate, not only that pullgate runs). Then it
removes that one taint from its own node with a JSON patch whose "test" operations make it
remove exactly the taint it read, and idles. Its service account may only get and patch nodes,
and a ValidatingAdmissionPolicy holds it to its own node and to removing this taint.

Python's standard library only; the API server is reached as every pod reaches it
(KUBERNETES_SERVICE_HOST/PORT, the service account's token and CA).
"""

import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request

TAINT_KEY = "pullgate.dev/not-ready"
PULLGATE = os.environ.get("PULLGATE_METRICS", "http://127.0.0.1:9469")
SA_DIR = os.environ.get("SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "2"))
# A response larger than this is not an answer this script expects.
MAX_BODY = 4 * 1024 * 1024
# One CRI call counted on pullgate's socket, by method and gRPC code.
CALLS = re.compile(r'^pullgate_upstream_requests_total\{[^}]*\}\s+([0-9.eE+]+)\s*$', re.M)


def log(message):
    print(message, file=sys.stderr, flush=True)


def get_local(path):
    """Status and text of a GET to pullgate's endpoint on this node."""
    try:
        with urllib.request.urlopen(PULLGATE + path, timeout=5) as response:
            return response.status, response.read(MAX_BODY).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(MAX_BODY).decode("utf-8", "replace")
    except (OSError, ValueError) as error:
        return None, str(error)


def kubelet_calls(metrics):
    """CRI calls pullgate has served since it started, all methods and codes together."""
    return sum(float(value) for value in CALLS.findall(metrics))


def wait_for_pullgate():
    said = None
    while True:
        status, text = get_local("/readyz")
        if status != 200:
            state = "pullgate is not ready: %s %s" % (status, text.strip()[:200])
        else:
            status, text = get_local("/metrics")
            if status == 200 and kubelet_calls(text) > 0:
                log("pullgate is ready and kubelet calls it")
                return
            state = "pullgate is ready; waiting for kubelet's first call to it"
        if state != said:
            log(state)
            said = state
        time.sleep(POLL_SECONDS)


class Api:
    """The API server, with this pod's service account token (re-read: kubelet rotates it)."""

    def __init__(self):
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = "[%s]" % host
        self.base = "https://%s:%s" % (host, port)
        self.tls = ssl.create_default_context(cafile=os.path.join(SA_DIR, "ca.crt"))

    def call(self, method, path, body=None, content_type=None):
        with open(os.path.join(SA_DIR, "token"), encoding="utf-8") as token_file:
            token = token_file.read().strip()
        request = urllib.request.Request(self.base + path, method=method, data=body)
        request.add_header("Authorization", "Bearer " + token)
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
                return response.status, response.read(MAX_BODY)
        except urllib.error.HTTPError as error:
            return error.code, error.read(MAX_BODY)


def removal(node):
    """The JSON patch that removes every taint with TAINT_KEY, each only if still where it was
    read, highest index first so the lower ones stay put; None when there is none."""
    taints = (node.get("spec") or {}).get("taints") or []
    at = [i for i, taint in enumerate(taints) if taint.get("key") == TAINT_KEY]
    if not at:
        return None
    patch = []
    for i in reversed(at):
        patch.append({"op": "test", "path": "/spec/taints/%d/key" % i, "value": TAINT_KEY})
        patch.append({"op": "remove", "path": "/spec/taints/%d" % i})
    return patch


def remove_taint(api, node_name):
    path = "/api/v1/nodes/" + node_name
    while True:
        status, body = api.call("GET", path)
        if status != 200:
            log("GET node %s: HTTP %s: %s" % (node_name, status, body[:300]))
            time.sleep(POLL_SECONDS)
            continue
        patch = removal(json.loads(body))
        if patch is None:
            log("node %s has no %s taint" % (node_name, TAINT_KEY))
            return
        status, body = api.call(
            "PATCH", path, json.dumps(patch).encode(), "application/json-patch+json"
        )
        if status == 200:
            log("removed %s from node %s" % (TAINT_KEY, node_name))
            return
        # 409/422: the node changed between the read and the patch; read it again. 403: the
        # policy or RBAC refused, which the message says; keep trying, loudly.
        log("PATCH node %s: HTTP %s: %s" % (node_name, status, body[:300]))
        time.sleep(POLL_SECONDS)


def main():
    node_name = os.environ["NODE_NAME"]
    wait_for_pullgate()
    remove_taint(Api(), node_name)
    # A DaemonSet's pod must keep running; it has nothing more to do on this node.
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
