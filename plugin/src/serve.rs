//! `pullgate serve`: load everything, take the socket (systemd's, or bind one) and the metrics
//! port, drop privileges, serve until SIGTERM, reload on SIGHUP, and tell systemd (and
//! `/readyz`) when it is ready: once the policy and trust are loaded and containerd answers.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    audit::AuditLog,
    config::Config,
    containerd::Containerd,
    cri::{self, Upstream},
    gate::{Gate, Judge},
    metrics::{self, endpoint::Probes, Metrics},
    node,
    policy::Policy,
    registry::Registries,
};

/// Runs the proxy described by `config` until SIGTERM or SIGINT; returns after draining.
pub async fn run(config: Config) -> Result<(), String> {
    // Before anything is created: the audit log and state are not for other users.
    node::restrict_umask();
    let inherited = node::inherited_listener().map_err(|e| format!("socket activation: {e}"))?;
    let policy = Policy::load(&config.policy).map_err(|e| e.to_string())?;
    tracing::info!(policy = %config.policy.display(), name = policy.name(), hash = policy.hash(), "policy loaded");
    let audit = AuditLog::open(&config.audit.path).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let registries = Registries::new(&config, metrics.clone())?;
    let upstream = Upstream::connect_lazy(&config.upstream);
    let containerd = Containerd::new(upstream.channel(), &config.containerd_namespace)?;
    let gate = Arc::new(Gate::new(
        policy,
        Judge::new(registries, config.verify_timeout, metrics.clone()),
        audit,
        upstream,
        containerd,
        metrics.clone(),
    ));

    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let bound_here = inherited.is_none();
    let listener = match inherited {
        Some(listener) => {
            tracing::info!("using the socket systemd passed (socket activation)");
            tokio::net::UnixListener::from_std(listener).map_err(|e| format!("socket activation: {e}"))?
        }
        None => node::bind_socket(&config.listen, config.socket.mode)
            .map_err(|e| format!("listen {}: {e}", config.listen.display()))?,
    };
    let metrics_listener = match &config.metrics {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m.listen)
                .await
                .map_err(|e| format!("metrics.listen {}: {e}", m.listen))?,
        ),
        None => None,
    };
    // Everything that needed privilege (the sockets, the audit log) is done.
    match node::drop_privileges() {
        Ok(0) => tracing::debug!("capabilities dropped, no_new_privs set"),
        Ok(left) => tracing::warn!(
            left,
            "capabilities dropped, but without CAP_SETPCAP the bounding set keeps {left}; no_new_privs keeps them out of reach"
        ),
        Err(error) => return Err(format!("dropping privileges: {error}")),
    }
    tracing::info!(listen = %config.listen.display(), upstream = %config.upstream.display(), "serving");
    let ready = Arc::new(AtomicBool::new(false));
    let readiness = tokio::spawn(announce_ready(gate.clone(), ready.clone()));
    let metrics_endpoint = metrics_listener.map(|listener| {
        let probes = Probes {
            ready: ready.clone(),
            not_ready: format!(
                "not ready: containerd at {} has not answered CRI Version yet",
                config.upstream.display()
            ),
        };
        tokio::spawn(metrics::endpoint::serve(listener, metrics, probes))
    });

    let reload = {
        let gate = gate.clone();
        let path = config.policy.clone();
        let ready = ready.clone();
        async move {
            while hangup.recv().await.is_some() {
                let announced = ready.load(Ordering::SeqCst);
                if announced {
                    node::notify::reloading();
                }
                match gate.reopen_audit() {
                    Ok(true) => tracing::info!("audit log moved away: a new file continues the chain"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "audit log not reopened; records keep going to the moved file")
                    }
                }
                match gate.reload_policy(&path) {
                    Ok(()) => tracing::info!(policy = %path.display(), hash = gate.policy().hash(), "policy reloaded"),
                    Err(error) => {
                        tracing::error!(policy = %path.display(), %error, "policy reload refused; the last good policy stays in force")
                    }
                }
                if announced {
                    node::notify::ready(&format!("serving; policy {}", gate.policy().hash()));
                }
            }
        }
    };
    let reloader = tokio::spawn(reload);
    let shutdown = async {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        node::notify::stopping();
    };
    cri::serve(listener, gate, config.socket.allowed_uids.clone(), shutdown).await;
    reloader.abort();
    readiness.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    // A socket systemd passed stays: it holds the next pulls while pullgate restarts.
    if bound_here {
        let _ = std::fs::remove_file(&config.listen);
    }
    Ok(())
}

/// Waits until containerd answers, then tells systemd pullgate is ready (the policy and trust
/// were loaded before serving began). Until then calls are served, and fail as containerd does.
async fn announce_ready(gate: Arc<Gate>, ready: Arc<AtomicBool>) {
    let mut delay = Duration::from_millis(100);
    for attempt in 0u32.. {
        match gate.upstream().version(Duration::from_secs(2)).await {
            Ok(version) => {
                tracing::info!(
                    runtime = %version.runtime_name,
                    version = %version.runtime_version,
                    cri = %version.runtime_api_version,
                    "containerd answers; ready"
                );
                ready.store(true, Ordering::SeqCst);
                node::notify::ready(&format!("serving; policy {}", gate.policy().hash()));
                return;
            }
            Err(status) => {
                if attempt % 20 == 0 {
                    tracing::warn!(error = %status.message(), "containerd does not answer yet; not ready");
                }
                node::notify::status("waiting for containerd");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
