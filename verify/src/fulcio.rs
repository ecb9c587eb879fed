//! The Fulcio certificate claims a keyless authority can pin in `extensions`, by the names
//! Fulcio gives them (<https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md>).

use std::fmt;

use sigstore_crypto::FulcioCiClaims;

/// A claim Fulcio records in a certificate extension under `1.3.6.1.4.1.57264.1`, which a
/// keyless authority can require to equal a given string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FulcioClaim {
    GithubWorkflowTrigger,
    GithubWorkflowSha,
    GithubWorkflowName,
    GithubWorkflowRepository,
    GithubWorkflowRef,
    BuildSignerUri,
    BuildSignerDigest,
    RunnerEnvironment,
    SourceRepositoryUri,
    SourceRepositoryDigest,
    SourceRepositoryRef,
    SourceRepositoryIdentifier,
    SourceRepositoryOwnerUri,
    SourceRepositoryOwnerIdentifier,
    BuildConfigUri,
    BuildConfigDigest,
    BuildTrigger,
    RunInvocationUri,
    SourceRepositoryVisibilityAtSigning,
    DeploymentEnvironment,
}

// === impl FulcioClaim ===

impl FulcioClaim {
    pub const ALL: [FulcioClaim; 20] = [
        Self::GithubWorkflowTrigger,
        Self::GithubWorkflowSha,
        Self::GithubWorkflowName,
        Self::GithubWorkflowRepository,
        Self::GithubWorkflowRef,
        Self::BuildSignerUri,
        Self::BuildSignerDigest,
        Self::RunnerEnvironment,
        Self::SourceRepositoryUri,
        Self::SourceRepositoryDigest,
        Self::SourceRepositoryRef,
        Self::SourceRepositoryIdentifier,
        Self::SourceRepositoryOwnerUri,
        Self::SourceRepositoryOwnerIdentifier,
        Self::BuildConfigUri,
        Self::BuildConfigDigest,
        Self::BuildTrigger,
        Self::RunInvocationUri,
        Self::SourceRepositoryVisibilityAtSigning,
        Self::DeploymentEnvironment,
    ];

    /// The claim a policy calls `name` (`sourceRepositoryURI`); names are case-sensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|claim| claim.name() == name)
    }

    /// The claim whose name differs from `name` only in case, to suggest for a typo.
    pub fn from_name_ignoring_case(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|claim| claim.name().eq_ignore_ascii_case(name))
    }

    /// The name Fulcio gives the claim, as written in a policy.
    pub fn name(self) -> &'static str {
        self.info().0
    }

    /// The certificate extension's object identifier, dotted.
    pub fn oid(self) -> &'static str {
        self.info().1
    }

    /// The claim's value in a certificate's parsed claims, if the certificate carries it.
    pub fn value_in(self, claims: &FulcioCiClaims) -> Option<&str> {
        let github = &claims.deprecated_github;
        let value = match self {
            Self::GithubWorkflowTrigger => &github.workflow_trigger,
            Self::GithubWorkflowSha => &github.workflow_sha,
            Self::GithubWorkflowName => &github.workflow_name,
            Self::GithubWorkflowRepository => &github.workflow_repository,
            Self::GithubWorkflowRef => &github.workflow_ref,
            Self::BuildSignerUri => &claims.build_signer_uri,
            Self::BuildSignerDigest => &claims.build_signer_digest,
            Self::RunnerEnvironment => &claims.runner_environment,
            Self::SourceRepositoryUri => &claims.source_repository_uri,
            Self::SourceRepositoryDigest => &claims.source_repository_digest,
            Self::SourceRepositoryRef => &claims.source_repository_ref,
            Self::SourceRepositoryIdentifier => &claims.source_repository_identifier,
            Self::SourceRepositoryOwnerUri => &claims.source_repository_owner_uri,
            Self::SourceRepositoryOwnerIdentifier => &claims.source_repository_owner_identifier,
            Self::BuildConfigUri => &claims.build_config_uri,
            Self::BuildConfigDigest => &claims.build_config_digest,
            Self::BuildTrigger => &claims.build_trigger,
            Self::RunInvocationUri => &claims.run_invocation_uri,
            Self::SourceRepositoryVisibilityAtSigning => &claims.source_repository_visibility_at_signing,
            Self::DeploymentEnvironment => &claims.deployment_environment,
        };
        value.as_deref()
    }

    fn info(self) -> (&'static str, &'static str) {
        match self {
            Self::GithubWorkflowTrigger => ("githubWorkflowTrigger", "1.3.6.1.4.1.57264.1.2"),
            Self::GithubWorkflowSha => ("githubWorkflowSHA", "1.3.6.1.4.1.57264.1.3"),
            Self::GithubWorkflowName => ("githubWorkflowName", "1.3.6.1.4.1.57264.1.4"),
            Self::GithubWorkflowRepository => ("githubWorkflowRepository", "1.3.6.1.4.1.57264.1.5"),
            Self::GithubWorkflowRef => ("githubWorkflowRef", "1.3.6.1.4.1.57264.1.6"),
            Self::BuildSignerUri => ("buildSignerURI", "1.3.6.1.4.1.57264.1.9"),
            Self::BuildSignerDigest => ("buildSignerDigest", "1.3.6.1.4.1.57264.1.10"),
            Self::RunnerEnvironment => ("runnerEnvironment", "1.3.6.1.4.1.57264.1.11"),
            Self::SourceRepositoryUri => ("sourceRepositoryURI", "1.3.6.1.4.1.57264.1.12"),
            Self::SourceRepositoryDigest => ("sourceRepositoryDigest", "1.3.6.1.4.1.57264.1.13"),
            Self::SourceRepositoryRef => ("sourceRepositoryRef", "1.3.6.1.4.1.57264.1.14"),
            Self::SourceRepositoryIdentifier => ("sourceRepositoryIdentifier", "1.3.6.1.4.1.57264.1.15"),
            Self::SourceRepositoryOwnerUri => ("sourceRepositoryOwnerURI", "1.3.6.1.4.1.57264.1.16"),
            Self::SourceRepositoryOwnerIdentifier => ("sourceRepositoryOwnerIdentifier", "1.3.6.1.4.1.57264.1.17"),
            Self::BuildConfigUri => ("buildConfigURI", "1.3.6.1.4.1.57264.1.18"),
            Self::BuildConfigDigest => ("buildConfigDigest", "1.3.6.1.4.1.57264.1.19"),
            Self::BuildTrigger => ("buildTrigger", "1.3.6.1.4.1.57264.1.20"),
            Self::RunInvocationUri => ("runInvocationURI", "1.3.6.1.4.1.57264.1.21"),
            Self::SourceRepositoryVisibilityAtSigning => {
                ("sourceRepositoryVisibilityAtSigning", "1.3.6.1.4.1.57264.1.22")
            }
            Self::DeploymentEnvironment => ("deploymentEnvironment", "1.3.6.1.4.1.57264.1.23"),
        }
    }
}

impl fmt::Display for FulcioClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
