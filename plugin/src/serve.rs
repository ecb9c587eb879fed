//! `pullgate serve`: load everything, bind the socket, serve until SIGTERM, reload on SIGHUP.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    audit::AuditLog,
    config::Config,
    containerd::Containerd,
    cri::{self, Upstream},
    gate::{Gate, Judge},
    node,
    policy::Policy,
    registry::Registries,
};

/// Runs the proxy described by `config` until SIGTERM or SIGINT; returns after draining.
pub async fn run(config: Config) -> Result<(), String> {
    let policy = Policy::load(&config.policy).map_err(|e| e.to_string())?;
    tracing::info!(policy = %config.policy.display(), name = policy.name(), hash = policy.hash(), "policy loaded");
    if config.metrics.is_some() {
        tracing::warn!("metrics.listen is set, but this version does not serve metrics yet");
    }
    let audit = AuditLog::open(&config.audit.path).map_err(|e| e.to_string())?;
    let registries = Registries::new(&config)?;
    let upstream = Upstream::connect_lazy(&config.upstream);
    let containerd = Containerd::new(upstream.channel(), &config.containerd_namespace)?;
    let gate = Arc::new(Gate::new(
        policy,
        Judge::new(registries, config.verify_timeout),
        audit,
        upstream,
        containerd,
    ));

    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let listener = node::bind_socket(&config.listen, config.socket.mode)
        .map_err(|e| format!("listen {}: {e}", config.listen.display()))?;
    tracing::info!(listen = %config.listen.display(), upstream = %config.upstream.display(), "serving");

    let reload = {
        let gate = gate.clone();
        let path = config.policy.clone();
        async move {
            while hangup.recv().await.is_some() {
                match gate.reload_policy(&path) {
                    Ok(()) => tracing::info!(policy = %path.display(), hash = gate.policy().hash(), "policy reloaded"),
                    Err(error) => {
                        tracing::error!(policy = %path.display(), %error, "policy reload refused; the last good policy stays in force")
                    }
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
    };
    cri::serve(listener, gate, config.socket.allowed_uids.clone(), shutdown).await;
    reloader.abort();
    let _ = std::fs::remove_file(&config.listen);
    Ok(())
}
