//! Arguments of the commands that look at flows already judged: `replay`,
//! `advise` and `audit` (recorded flows), and `observe` (a live agent's).

use super::*;

/// What `netgov replay` and `netgov audit` read: recorded flows and the
/// policies to judge them against.
#[derive(Debug, Args)]
pub struct RecordingArgs {
    /// Flow logs of `netgov agent` (format 1). Repeatable.
    #[arg(long = "flow-log", value_name = "FILE", required = true)]
    pub flow_logs: Vec<std::path::PathBuf>,
    /// Manifests (files or directories) with the policies to judge
    /// against. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present_any = ["cluster", "kubeconfig"],
        conflicts_with_all = ["cluster", "kubeconfig"]
    )]
    pub manifests: Vec<std::path::PathBuf>,
    /// Judge against the live cluster's policies (in-cluster,
    /// `$KUBECONFIG`, `~/.kube/config`).
    #[arg(long)]
    pub cluster: bool,
    /// Judge against the policies of the cluster this kubeconfig names.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Only flows seen within this long before now (e.g. `30d`, `12h`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Fail (exit 1) on a flow-log line that cannot be used, instead of
    /// reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

/// Arguments of `netgov replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording and the policies.
    #[command(flatten)]
    pub input: RecordingArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::commands::replay::ReplayFormat::Table)]
    pub format: crate::commands::replay::ReplayFormat,
    /// Exit 3 when a flow would change this way.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub fail_on: Vec<crate::commands::replay::Change>,
}

/// Arguments of `netgov advise`.
#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// Flow logs of `netgov agent` (format 1). Repeatable.
    #[arg(long = "flow-log", value_name = "FILE", required = true)]
    pub flow_logs: Vec<std::path::PathBuf>,
    /// The policies in force (manifests), which the advice adds to: the
    /// check replays the recording against them plus the advice.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub manifests: Vec<std::path::PathBuf>,
    /// Advise for the workloads of this namespace only.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AdviseFormat::Yaml)]
    pub format: AdviseFormat,
    /// Fail (exit 1) on a flow-log line that cannot be used.
    #[arg(long)]
    pub strict: bool,
}

/// Output of `netgov advise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AdviseFormat {
    /// NetworkPolicy manifests, commented with the evidence.
    Yaml,
}

/// Arguments of `netgov audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The recording and the policies.
    #[command(flatten)]
    pub input: RecordingArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::commands::audit::AuditFormat::Table)]
    pub format: crate::commands::audit::AuditFormat,
    /// Exit 3 when the audit finds this.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub fail_on: Vec<crate::commands::audit::Finding>,
}

/// Arguments of `netgov observe`.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// The agent's HTTP address (with `kubectl port-forward` to an agent
    /// pod, its local end).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9464",
        env = "NETGOV_SERVER",
        conflicts_with = "node"
    )]
    pub server: String,
    /// Observe the agent on this node, through the API server's
    /// port-forward (needs `create` on `pods/portforward`).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// With --node: the kubeconfig (default: in-cluster, then $KUBECONFIG,
    /// then ~/.kube/config).
    #[arg(long, value_name = "PATH", requires = "node")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// With --node: the namespace the agent DaemonSet runs in.
    #[arg(long, value_name = "NAMESPACE", default_value = "netgov")]
    pub agent_namespace: String,
    /// With --node: the agent pods' label selector.
    #[arg(
        long,
        value_name = "SELECTOR",
        default_value = "app.kubernetes.io/name=netgov,app.kubernetes.io/component=agent"
    )]
    pub agent_selector: String,
    /// Which flows.
    #[command(flatten)]
    pub filter: crate::flowlog::FlowFilter,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::commands::observe::ObserveFormat::Table)]
    pub format: crate::commands::observe::ObserveFormat,
}

impl ObserveArgs {
    /// The observe options.
    pub fn options(&self) -> crate::commands::observe::ObserveOptions {
        let target = match &self.node {
            Some(node) => {
                crate::commands::observe::Target::Node(crate::commands::observe::NodeTarget {
                    node: node.clone(),
                    namespace: self.agent_namespace.clone(),
                    selector: self.agent_selector.clone(),
                    kubeconfig: self.kubeconfig.clone(),
                })
            }
            None => crate::commands::observe::Target::Server(self.server.clone()),
        };
        crate::commands::observe::ObserveOptions {
            target,
            filter: self.filter.clone(),
            format: self.format,
        }
    }
}
