//! The AKS taint remover (`installer/aks/`), as far as it runs here: its manifests parse and
//! hold what the docs say; its ValidatingAdmissionPolicy's CEL, evaluated with the CEL crate
//! pullgate uses, admits its own node losing that one taint and nothing else; and its script,
//! against a real pullgate's `/readyz` and `/metrics` and a double of the API server (a real one
//! cannot run here), removes exactly that taint, and only after kubelet's first call to pullgate.

use std::{
    collections::HashMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use cel::{objects::Key, Context, Program, Value};
use pullgate_tests::{
    cri,
    process::{free_local_port, Daemon},
    pullgate::{http_get, with_metrics},
    tls::TestCa,
    Pullgate, TestEnv,
};
use serde_json::json;

const TAINT: &str = "pullgate.dev/not-ready";
const REMOVER: &str = "system:serviceaccount:pullgate-system:pullgate-taint-remover";
const NODE_CLAIM: &str = "authentication.kubernetes.io/node-name";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every document of `installer/aks/taint-remover.yaml`, as JSON.
fn manifests() -> Vec<serde_json::Value> {
    let text = fs::read_to_string(repo().join("installer/aks/taint-remover.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .collect()
}

fn manifest(kind: &str) -> serde_json::Value {
    let found: Vec<_> = manifests().into_iter().filter(|m| m["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in taint-remover.yaml");
    found.into_iter().next().unwrap()
}

// --- The manifests ------------------------------------------------------------------------------

#[test]
fn the_manifests_grant_get_and_patch_on_nodes_and_nothing_else() {
    let kinds: Vec<String> = manifests()
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            // The policy first: kubectl applies in order, so the rights exist only once the
            // policy narrowing them does.
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    assert_eq!(
        manifest("ClusterRole")["rules"],
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}])
    );
    let binding = manifest("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "pullgate-taint-remover");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "pullgate-taint-remover", "namespace": "pullgate-system"}])
    );
    let vap_binding = manifest("ValidatingAdmissionPolicyBinding");
    assert_eq!(vap_binding["spec"]["policyName"], "pullgate-taint-remover");
    assert_eq!(vap_binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(manifest("ValidatingAdmissionPolicy")["spec"]["failurePolicy"], "Fail");
}

#[test]
fn the_daemonset_tolerates_only_its_taint_and_reaches_pullgate_on_the_node() {
    let daemonset = manifest("DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pullgate-taint-remover");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"], json!([{"key": TAINT, "operator": "Exists"}]));
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["command"],
        json!(["/usr/bin/python3", "/opt/pullgate/remove-taint.py"])
    );
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // The script's default endpoint is where the DaemonSet's pullgate serves it.
    let script = fs::read_to_string(repo().join("installer/aks/remove-taint.py")).unwrap();
    assert!(script.contains(&format!("TAINT_KEY = \"{TAINT}\"")));
    assert!(script.contains("\"http://127.0.0.1:9469\""));
    let node_ds = fs::read_to_string(repo().join("installer/kubernetes/daemonset.yaml")).unwrap();
    let configmap = serde_yaml_ng::Deserializer::from_str(&node_ds)
        .map(|doc| {
            serde_json::to_value(<serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap()).unwrap()
        })
        .find(|m| m["kind"] == "ConfigMap")
        .unwrap();
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(configmap["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["metrics"]["listen"].as_str(), Some("127.0.0.1:9469"));
}

/// What install-aks.md tells the operator to run names the taint, the manifests and the script
/// as they are.
#[test]
fn the_aks_page_names_the_taint_and_the_files_as_shipped() {
    let page = fs::read_to_string(repo().join("docs/install-aks.md")).unwrap();
    for needle in [
        format!("--node-init-taints {TAINT}=true:NoSchedule"),
        "--from-file=remove-taint.py=installer/aks/remove-taint.py".to_string(),
        "kubectl apply -f installer/aks/taint-remover.yaml".to_string(),
        NODE_CLAIM.to_string(),
    ] {
        assert!(page.contains(&needle), "install-aks.md lacks {needle:?}");
    }
    assert!(!page.contains("cbl-mariner"), "Mariner 2.0 is end-of-life");
    // Where ValidatingAdmissionPolicy v1 is not served, `kubectl apply` refuses the policy but
    // creates the rest: the remover could patch any node. Checked before the apply, everywhere.
    let check = "kubectl get validatingadmissionpolicies.v1.admissionregistration.k8s.io";
    let readme_text = fs::read_to_string(repo().join("installer/aks/README.md")).unwrap();
    let manifest_text = fs::read_to_string(repo().join("installer/aks/taint-remover.yaml")).unwrap();
    assert!(
        manifest_text.contains(check),
        "taint-remover.yaml does not say to check for the policy API"
    );
    for (name, text) in [("install-aks.md", &page), ("README.md", &readme_text)] {
        let checked = text
            .find(check)
            .unwrap_or_else(|| panic!("{name} does not check for the policy API"));
        let applied = text.find("kubectl apply -f installer/aks/taint-remover.yaml").unwrap();
        assert!(checked < applied, "{name}: the check comes after the apply");
    }
    let readme = fs::read_to_string(repo().join("installer/aks/README.md")).unwrap();
    assert!(!readme.contains("cbl-mariner"), "Mariner 2.0 is end-of-life");
    assert!(readme.contains("taint-remover.yaml"));
}

// --- The ValidatingAdmissionPolicy ----------------------------------------------------------------

/// JSON as CEL sees a Kubernetes object.
fn cel_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map_or_else(|| Value::Float(n.as_f64().unwrap()), Value::Int),
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.iter().map(cel_value).collect())),
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), cel_value(v)))
                .collect();
            Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// What the API server would answer the remover's request, as the policy decides it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The policy does not apply (its match condition is false).
    NotMatched,
    Allowed,
    /// Denied with the message of the first validation that failed (or could not run: the
    /// policy's failurePolicy is Fail).
    Denied(String),
}

fn judge(request: &serde_json::Value) -> Verdict {
    let policy = manifest("ValidatingAdmissionPolicy");
    let mut context = Context::default();
    context.add_variable_from_value("request", cel_value(request));
    context.add_variable_from_value("object", cel_value(&request["object"]));
    context.add_variable_from_value("oldObject", cel_value(&request["oldObject"]));
    let run = |expression: &str| -> Result<bool, String> {
        let program = Program::compile(expression).map_err(|e| format!("{expression}: {e}"))?;
        match program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{expression}: not a bool: {other:?}")),
            Err(e) => Err(format!("{expression}: {e}")),
        }
    };
    for condition in policy["spec"]["matchConditions"].as_array().unwrap() {
        match run(condition["expression"].as_str().unwrap()) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched,
            Err(e) => return Verdict::Denied(e),
        }
    }
    for validation in policy["spec"]["validations"].as_array().unwrap() {
        match run(validation["expression"].as_str().unwrap()) {
            Ok(true) => {}
            Ok(false) => return Verdict::Denied(validation["message"].as_str().unwrap().to_string()),
            Err(e) => return Verdict::Denied(e),
        }
    }
    Verdict::Allowed
}

/// A node as AKS makes one: labels, annotations, a provider ID, and taints around ours.
fn aks_node(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/os": "linux", "agentpool": "canary"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            "resourceVersion": "4711"
        },
        "spec": {
            "providerID": format!("azure:///subscriptions/x/virtualMachineScaleSets/aks-canary/virtualMachines/0/{name}"),
            "podCIDRs": ["10.244.3.0/24"],
            "taints": [
                {"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"},
                {"key": TAINT, "value": "true", "effect": "NoSchedule"},
                {"key": "example.com/maintenance", "effect": "NoExecute", "timeAdded": "2026-12-07T09:00:00Z"}
            ]
        },
        "status": {"conditions": []}
    })
}

fn without_our_taint(mut node: serde_json::Value) -> serde_json::Value {
    node["spec"]["taints"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["key"] != TAINT);
    node
}

/// An UPDATE of `old` to `new` by `username`, whose token's extra says `extra`.
fn update(
    username: &str,
    extra: serde_json::Value,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "operation": "UPDATE",
        "resource": {"group": "", "version": "v1", "resource": "nodes"},
        "name": new["metadata"]["name"],
        "userInfo": {
            "username": username,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:pullgate-system", "system:authenticated"],
            "extra": extra
        },
        "object": new,
        "oldObject": old
    })
}

fn pod_token(node: &str) -> serde_json::Value {
    json!({
        "authentication.kubernetes.io/pod-name": ["pullgate-taint-remover-x7k2p"],
        "authentication.kubernetes.io/pod-uid": ["0b7e4c2a-0000-4000-8000-000000000001"],
        NODE_CLAIM: [node],
    })
}

#[test]
fn the_policy_admits_its_own_node_losing_that_taint_and_nothing_else() {
    let old = aks_node("aks-canary-0");
    let removed = without_our_taint(old.clone());
    let token = pod_token("aks-canary-0");

    assert_eq!(judge(&update(REMOVER, token.clone(), &old, &removed)), Verdict::Allowed);

    // Another node's taint, with this node's token.
    let other_old = aks_node("aks-canary-1");
    let other_new = without_our_taint(other_old.clone());
    assert_eq!(
        judge(&update(REMOVER, token.clone(), &other_old, &other_new)),
        Verdict::Denied("the taint remover may only change the node its pod runs on".into())
    );

    // Another taint removed, alone or with ours; a taint added; ours changed in place.
    let mut other_taint = removed.clone();
    other_taint["spec"]["taints"].as_array_mut().unwrap().remove(0);
    let mut only_other = old.clone();
    only_other["spec"]["taints"].as_array_mut().unwrap().remove(0);
    let mut added = old.clone();
    added["spec"]["taints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "x", "effect": "NoSchedule"}));
    let mut weakened = old.clone();
    weakened["spec"]["taints"][1]["effect"] = "PreferNoSchedule".into();
    for new in [&other_taint, &only_other, &added, &weakened] {
        assert_eq!(
            judge(&update(REMOVER, token.clone(), &old, new)),
            Verdict::Denied("the taint remover may only remove the pullgate.dev/not-ready taint".into()),
            "{new}"
        );
    }

    // A label added, an annotation changed, the node cordoned, its provider changed.
    let mut labelled = removed.clone();
    labelled["metadata"]["labels"]["pullgate.dev/verified"] = "true".into();
    let mut annotated = removed.clone();
    annotated["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = "30".into();
    for new in [&labelled, &annotated] {
        assert_eq!(
            judge(&update(REMOVER, token.clone(), &old, new)),
            Verdict::Denied(
                "the taint remover may not change a node's labels, annotations, finalizers or owners".into()
            ),
            "{new}"
        );
    }
    let mut cordoned = removed.clone();
    cordoned["spec"]["unschedulable"] = true.into();
    let mut moved = removed.clone();
    moved["spec"]["providerID"] = "azure:///elsewhere".into();
    for new in [&cordoned, &moved] {
        assert_eq!(
            judge(&update(REMOVER, token.clone(), &old, new)),
            Verdict::Denied("the taint remover may not change a node's spec beyond its taints".into()),
            "{new}"
        );
    }

    // A token without the node claim (not bound to a pod, or a cluster before 1.30), or none.
    let no_claim = json!({"authentication.kubernetes.io/pod-name": ["p"]});
    for extra in [no_claim, json!({}), serde_json::Value::Null] {
        let mut request = update(REMOVER, extra.clone(), &old, &removed);
        if extra.is_null() {
            request["userInfo"].as_object_mut().unwrap().remove("extra");
        }
        assert_eq!(
            judge(&request),
            Verdict::Denied("the taint remover may only change the node its pod runs on".into()),
            "{extra}"
        );
    }

    // Deleting its node: no `object`, so only the first validation's message can be asked for.
    let mut delete = update(REMOVER, token.clone(), &old, &serde_json::Value::Null);
    delete["operation"] = "DELETE".into();
    assert_eq!(
        judge(&delete),
        Verdict::Denied("the taint remover may only update a node".into())
    );

    // The policy is about the remover only.
    assert_eq!(
        judge(&update("system:node:aks-canary-0", token, &old, &labelled)),
        Verdict::NotMatched
    );
}

// --- The script, against a real pullgate and a double of the API server ---------------------------

/// A double of the API server's node endpoints, over TLS: GET serves the node from a file,
/// PATCH applies a JSON patch (test and remove, what the remover sends) to it; every request
/// is recorded, one JSON line each.
const API_DOUBLE: &str = r#"
import http.server, json, ssl, sys
cert, key, port_file, node_file, log_file = sys.argv[1:6]

def resolve(doc, pointer):
    parts = pointer.lstrip('/').split('/')
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    last = parts[-1]
    return doc, int(last) if isinstance(doc, list) else last

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def record(self, body):
        with open(log_file, 'a') as f:
            f.write(json.dumps({'method': self.command, 'path': self.path,
                                'authorization': self.headers.get('Authorization'),
                                'contentType': self.headers.get('Content-Type'),
                                'body': json.loads(body) if body else None}) + '\n')
    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def node(self):
        with open(node_file) as f:
            node = json.load(f)
        return node if self.path == '/api/v1/nodes/' + node['metadata']['name'] else None
    def do_GET(self):
        self.record(None)
        node = self.node()
        self.answer(200, node) if node else self.answer(404, {'reason': 'NotFound'})
    def do_PATCH(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.record(body)
        node = self.node()
        if node is None:
            return self.answer(404, {'reason': 'NotFound'})
        for op in json.loads(body):
            parent, at = resolve(node, op['path'])
            if op['op'] == 'test' and parent[at] != op['value']:
                return self.answer(422, {'reason': 'Invalid', 'message': 'test failed'})
            if op['op'] == 'remove':
                del parent[at]
        with open(node_file, 'w') as f:
            json.dump(node, f)
        self.answer(200, node)

server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
server.socket = tls.wrap_socket(server.socket, server_side=True)
with open(port_file + '.tmp', 'w') as f:
    f.write(str(server.server_address[1]))
import os; os.rename(port_file + '.tmp', port_file)
server.serve_forever()
"#;

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pullgate serve` with `config` plus `metrics.listen` on a free port, and waits until
/// `/healthz` answers (not `/readyz`: the remover's wait on it is under test).
async fn serve_with_metrics(dir: &Path, config: &str) -> (Daemon, SocketAddr) {
    for _ in 0..4 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_local_port().unwrap()).into();
        let path = dir.join("config.yaml");
        fs::write(&path, with_metrics(config, addr)).unwrap();
        let mut command = Pullgate::command();
        command.arg("serve").arg("--config").arg(&path);
        let mut daemon = Daemon::spawn("pullgate", command, &dir.join("pullgate.log")).unwrap();
        let healthy = daemon
            .wait_ready("/healthz answers", Duration::from_secs(10), async || {
                http_get(addr, "/healthz").await.is_ok_and(|(s, _)| s == 200)
            })
            .await;
        match healthy {
            Ok(()) => return (daemon, addr),
            Err(e) if e.log_tail.contains("Address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port for metrics.listen after 4 attempts");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remover_waits_for_kubelets_first_call_then_removes_only_its_taint() {
    let env = TestEnv::start().await;
    let dir = env.dir().join("aks");
    // pullgate as the DaemonSet runs it, started here without the rig's own readiness call
    // (a CRI call would count as kubelet's); it serves /healthz before it is ready.
    let pg_dir = dir.join("pullgate");
    fs::create_dir_all(&pg_dir).unwrap();
    fs::write(
        pg_dir.join("policy.yaml"),
        env.key_policy(&[&format!("{}/**", env.host())]),
    )
    .unwrap();
    let (_pullgate, metrics) = serve_with_metrics(&pg_dir, &env.pullgate_config(&pg_dir, "10s")).await;
    let socket = pg_dir.join("pullgate.sock");

    // The pod's service account mount: its token and the API server's CA.
    let tls = TestCa::generate().write_to(&dir.join("tls"));
    let sa = dir.join("serviceaccount");
    fs::create_dir_all(&sa).unwrap();
    fs::write(sa.join("token"), "the-pods-bound-token\n").unwrap();
    fs::copy(&tls.ca, sa.join("ca.crt")).unwrap();

    let original = aks_node("aks-canary-0");
    let node_file = dir.join("node.json");
    fs::write(&node_file, original.to_string()).unwrap();
    let log = dir.join("requests.jsonl");
    let port_file = dir.join("port");
    let double_py = dir.join("api_double.py");
    fs::write(&double_py, API_DOUBLE).unwrap();
    let _api = Killed(
        Command::new("python3")
            .arg(&double_py)
            .args([&tls.certificate, &tls.key, &port_file, &node_file, &log])
            .spawn()
            .expect("run python3"),
    );
    wait_for("the API double", Duration::from_secs(10), || port_file.exists());
    let port = fs::read_to_string(&port_file).unwrap();

    let stderr_path = dir.join("remover.log");
    let _remover = Killed(
        Command::new("python3")
            .arg(repo().join("installer/aks/remove-taint.py"))
            .env("NODE_NAME", "aks-canary-0")
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", port.trim())
            .env("SA_DIR", &sa)
            .env("PULLGATE_METRICS", format!("http://{metrics}"))
            .env("POLL_SECONDS", "0.1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("run the remover"),
    );
    let said = || fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_for("the remover to see pullgate ready", Duration::from_secs(20), || {
        said().contains("waiting for kubelet's first call")
    });
    assert_eq!(http_get(metrics, "/readyz").await.unwrap().0, 200);
    // Ready alone is not enough: kubelet may not be wired yet.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!log.exists(), "no API call before kubelet called pullgate:\n{}", said());

    // kubelet's first call (ImageFsInfo comes every few seconds from a wired kubelet).
    cri::image_fs_info(&socket).await.unwrap();
    wait_for("the taint to go", Duration::from_secs(20), || {
        said().contains("removed pullgate.dev/not-ready from node aks-canary-0")
    });

    let requests: Vec<serde_json::Value> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0]["method"], "GET");
    assert_eq!(requests[0]["path"], "/api/v1/nodes/aks-canary-0");
    assert_eq!(requests[1]["method"], "PATCH");
    assert_eq!(requests[1]["path"], "/api/v1/nodes/aks-canary-0");
    assert_eq!(requests[1]["contentType"], "application/json-patch+json");
    assert_eq!(
        requests[1]["body"],
        json!([
            {"op": "test", "path": "/spec/taints/1/key", "value": TAINT},
            {"op": "remove", "path": "/spec/taints/1"}
        ])
    );
    for request in &requests {
        assert_eq!(request["authorization"], "Bearer the-pods-bound-token");
    }

    // The node it leaves behind is the one the policy admits.
    let patched: serde_json::Value = serde_json::from_str(&fs::read_to_string(&node_file).unwrap()).unwrap();
    assert_eq!(patched, without_our_taint(original.clone()));
    assert_eq!(
        judge(&update(REMOVER, pod_token("aks-canary-0"), &original, &patched)),
        Verdict::Allowed
    );
}
