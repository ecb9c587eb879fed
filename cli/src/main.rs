//! The `pullgate` command line. Each command parses its arguments and calls the library.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use pullgate::{
    audit,
    config::{Config, ConfigError},
    doctor,
    gate::Judge,
    metrics::Metrics,
    node,
    policy::{Policy, PolicyErrors},
    registry::{Credentials, DockerConfig, DockerConfigError, Registries},
};

/// A CRI ImageService proxy that verifies cosign / Sigstore signatures before kubelet's image
/// pulls reach containerd.
///
/// Point kubelet's --image-service-endpoint (or imageServiceEndpoint in its configuration) at
/// pullgate's socket; pullgate forwards to containerd's CRI socket. Denied pulls fail with a
/// message starting "SignatureValidationFailed:" or "RegistryUnavailable:".
#[derive(Parser)]
#[command(name = "pullgate", version = pullgate::VERSION, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy: listen for kubelet, verify pulls, forward to containerd.
    ///
    /// SIGHUP reloads the policy (an invalid one is refused and the last good one stays) and,
    /// if the audit log was moved away (rotated), starts a new file that continues its chain;
    /// SIGTERM stops accepting, drains in-flight calls and exits 0.
    Serve {
        /// The configuration file (its fields: docs/contract.md).
        #[arg(long, env = "PULLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Decide images exactly as `serve` would, without pulling them.
    ///
    /// Exit status: 0 when every image is allowed, 1 when any is denied, 2 on error.
    Verify {
        /// Configuration to take the policy and registry settings from.
        #[arg(long, conflicts_with = "policy", required_unless_present = "policy")]
        config: Option<PathBuf>,
        /// A policy file, used with default registry settings (TLS everywhere).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The pod namespace to decide for; "" is a pull with no pod (crictl pull).
        #[arg(long, default_value = "")]
        namespace: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Registry credentials, as kubelet would send them: a Docker config.json (`docker
        /// login`'s, or a `.dockerconfigjson` pull secret), read for each image's registry, and
        /// for a rule's signatureRepository on another registry (in place of the configuration's
        /// dockerConfig). Keys match as kubelet matches them: host (with * globs), port, path
        /// prefix. Without it, images' registries are asked anonymously.
        #[arg(long, value_name = "CONFIG_JSON")]
        docker_config: Option<PathBuf>,
        /// Images to decide, e.g. ghcr.io/org/app:v1.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check the node: sockets, permissions, kubelet wiring, containerd, policy, trust
    /// material expiry, dockerConfig, audit log.
    ///
    /// Runs every check and prints one line each: "ok", "warn … — fix: …" or "FAIL … — fix: …".
    /// kubelet's wiring is read from the running kubelet (its command line in /proc and the
    /// configuration files it was started with, and whether they changed since); where no
    /// kubelet runs, from its KubeletConfiguration (imageServiceEndpoint) and from
    /// --image-service-endpoint in its systemd drop-ins (*.conf), which win over the file.
    /// Exit status: 0 when nothing failed, 1 when something did, 2 when the configuration
    /// cannot be read.
    Doctor {
        /// The configuration file (its fields: docs/contract.md).
        #[arg(long, env = "PULLGATE_CONFIG", default_value = doctor::DEFAULT_CONFIG)]
        config: PathBuf,
        /// kubelet's KubeletConfiguration file, judged where no kubelet runs.
        #[arg(long, default_value = doctor::DEFAULT_KUBELET_CONFIG)]
        kubelet_config: PathBuf,
        /// kubelet's systemd drop-in directory, judged where no kubelet runs.
        #[arg(long, default_value = doctor::DEFAULT_KUBELET_DROPINS)]
        kubelet_dropins: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; every error names the file, line and field. Exit 1 if invalid.
    Check { path: PathBuf },
    /// Print a pullgate policy equivalent to Kyverno or policy-controller policies.
    ///
    /// FILE holds one or more YAML documents: Kyverno ClusterPolicy/Policy (kyverno.io/v1,
    /// v2beta1) with verifyImages rules, ImageValidatingPolicy (policies.kyverno.io), Sigstore
    /// policy-controller ClusterImagePolicy (policy.sigstore.dev/v1alpha1, v1beta1) and its
    /// config-policy-controller ConfigMap. The policy goes to stdout; everything that could not
    /// be carried over as it was goes to stderr, one line each, naming the document and field.
    /// Nothing that cannot be carried over lets more through: a rule that keeps no signer
    /// denies.
    ///
    /// Exit status: 0 when everything was carried over, 1 when something was dropped or made
    /// stricter, 2 when FILE cannot be read, is not YAML or holds no supported policy.
    Import {
        /// The file to import (at most 1 MiB).
        file: PathBuf,
        /// The Sigstore trusted_root.json the policy names in spec.trustedRoot when a rule
        /// verifies signatures (keyless certificates, log entries and Sigstore bundles are
        /// checked against it).
        #[arg(long, default_value = pullgate_import::DEFAULT_TRUSTED_ROOT)]
        trusted_root: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain and name the first broken record. Exit 1 if broken.
    Verify { path: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Verify {
            config,
            policy,
            namespace,
            output,
            docker_config,
            images,
        } => verify(config, policy, &namespace, output, docker_config.as_deref(), &images),
        Command::Policy {
            command: PolicyCommand::Check { path },
        } => policy_check(&path),
        Command::Policy {
            command: PolicyCommand::Import { file, trusted_root },
        } => policy_import(&file, trusted_root),
        Command::Audit {
            command: AuditCommand::Verify { path },
        } => audit_verify(&path),
        Command::Doctor {
            config,
            kubelet_config,
            kubelet_dropins,
        } => run_doctor(doctor::Options {
            config,
            kubelet_config,
            kubelet_dropins,
        }),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // A log line that cannot be written (stderr past RLIMIT_FSIZE, a journal gone) is lost;
    // reporting it by eprintln! would panic the task that logged, mid-call.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    build_runtime(tokio::runtime::Builder::new_multi_thread().enable_all())
}

/// `serve`'s runtime. Capabilities and no_new_privs belong to each thread, and the runtime's
/// threads are started before the main thread has bound its sockets and dropped them: each
/// drops its own as it starts, needing none. One that cannot stops pullgate.
fn serve_runtime() -> tokio::runtime::Runtime {
    build_runtime(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(|| {
                if let Err(error) = node::drop_privileges() {
                    eprintln!("pullgate: dropping privileges on a runtime thread: {error}");
                    std::process::abort();
                }
            }),
    )
}

fn build_runtime(builder: &mut tokio::runtime::Builder) -> tokio::runtime::Runtime {
    match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pullgate: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pullgate: {e}");
            return ExitCode::from(2);
        }
    };
    // systemd's socket, taken before the runtime exists. Edition 2021 lets `remove_var` be
    // called safely, but it is sound only while no other thread reads the environment: here,
    // single-threaded, before the runtime's threads start.
    let inherited = node::inherited_listener();
    for name in node::ACTIVATION_VARIABLES {
        std::env::remove_var(name);
    }
    let outcome = match inherited {
        Ok(inherited) => serve_runtime().block_on(pullgate::serve::run(config, inherited)),
        Err(source) => Err(pullgate::serve::ServeError::Os {
            what: "socket activation".to_string(),
            source,
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pullgate stopped");
            eprintln!("pullgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(
    config: Option<PathBuf>,
    policy: Option<PathBuf>,
    namespace: &str,
    output: Output,
    docker_config: Option<&std::path::Path>,
    images: &[String],
) -> ExitCode {
    let (config, policy, elsewhere, docker_config) = match load_for_verify(config, policy, docker_config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pullgate verify: {e}");
            return ExitCode::from(2);
        }
    };
    // Counted like serve's, but nothing serves them.
    let metrics = std::sync::Arc::new(Metrics::new());
    let registries = match Registries::new(&config, metrics.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pullgate verify: {e}");
            return ExitCode::from(2);
        }
    };
    let judge = Judge::new(registries, config.verify_timeout, metrics);
    judge.set_docker_config(elsewhere);
    let mut any_denied = false;
    let rt = runtime();
    for image in images {
        let started = std::time::Instant::now();
        // --docker-config stands in for the credentials kubelet would send for the image.
        let credentials = match (&docker_config, pullgate::reference::Reference::parse(image)) {
            (Some(keys), Ok(reference)) => Credentials::from_docker_config(keys, reference.host(), reference.path()),
            _ => Credentials::anonymous(),
        };
        let judgement = rt.block_on(judge.judge(&policy, image, namespace, credentials));
        let record = judgement.record(namespace, "", started);
        // warn and audit-deny are allowed pulls; only an enforced denial blocks one.
        any_denied |= record.decision == audit::Decision::Deny;
        match output {
            Output::Json => match serde_json::to_string(&record) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("pullgate verify: {e}");
                    return ExitCode::from(2);
                }
            },
            Output::Text => print!("{}", record.to_text()),
        }
    }
    if any_denied {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Why `pullgate verify` could not start deciding.
enum VerifyError {
    Config(ConfigError),
    Policy(PolicyErrors),
    /// `--docker-config`.
    DockerConfig(DockerConfigError),
    /// The configuration's `dockerConfig`.
    ConfiguredDockerConfig(DockerConfigError),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Policy(e) => write!(f, "{e}"),
            Self::DockerConfig(e) => write!(f, "--docker-config {e}"),
            Self::ConfiguredDockerConfig(e) => write!(f, "dockerConfig: {e}"),
        }
    }
}

/// The configuration and policy `verify` decides with; the Docker config for registries other
/// than the image's (`--docker-config`, else the configuration's `dockerConfig`, as `serve` reads
/// it); and `--docker-config` for the image's own registry, if given.
fn load_for_verify(
    config: Option<PathBuf>,
    policy: Option<PathBuf>,
    docker_config: Option<&std::path::Path>,
) -> Result<(Config, Policy, DockerConfig, Option<DockerConfig>), VerifyError> {
    let docker_config = docker_config
        .map(DockerConfig::load)
        .transpose()
        .map_err(VerifyError::DockerConfig)?;
    let (config, policy, elsewhere) = match (config, policy) {
        (Some(path), _) => {
            let config = Config::load(&path).map_err(VerifyError::Config)?;
            let policy = Policy::load(&config.policy).map_err(VerifyError::Policy)?;
            let elsewhere = match &docker_config {
                Some(given) => given.clone(),
                None => DockerConfig::read(&config.docker_config).map_err(VerifyError::ConfiguredDockerConfig)?,
            };
            (config, policy, elsewhere)
        }
        // clap requires one of the two.
        (None, policy) => {
            let path = policy.unwrap_or_default();
            let policy = Policy::load(&path).map_err(VerifyError::Policy)?;
            let elsewhere = docker_config.clone().unwrap_or_else(DockerConfig::empty);
            (Config::with_policy(path), policy, elsewhere)
        }
    };
    Ok((config, policy, elsewhere, docker_config))
}

fn policy_check(path: &std::path::Path) -> ExitCode {
    match Policy::load(path) {
        Ok(policy) => {
            println!(
                "{}: valid ({} rules, hash {})",
                path.display(),
                policy.rules().len(),
                policy.hash()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn policy_import(file: &std::path::Path, trusted_root: PathBuf) -> ExitCode {
    let options = pullgate_import::Options { trusted_root };
    match pullgate_import::import(file, &options) {
        Ok(imported) => {
            print!("{}", imported.policy);
            for finding in &imported.findings {
                eprintln!("{}: {finding}", file.display());
            }
            if imported.dropped_anything() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("pullgate policy import: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

fn audit_verify(path: &std::path::Path) -> ExitCode {
    match audit::verify_chain(path) {
        Ok(Ok(summary)) => {
            let range = match (summary.first_seq, summary.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..={b}"),
                _ => "empty".to_string(),
            };
            println!("{}: intact, {} records ({range})", path.display(), summary.records);
            if summary.continues_earlier_file {
                println!("note: the first record continues a chain from an earlier (rotated) file");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            println!("{}:{}: chain broken: {}", path.display(), broken.line, broken.why);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pullgate audit verify: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn run_doctor(options: doctor::Options) -> ExitCode {
    let report = runtime().block_on(doctor::run(&options));
    print!("{report}");
    ExitCode::from(report.exit_code())
}
