//! Plugin manifests (`plugin.toml`): what agent type a component provides, its description and
//! subscriptions. Unknown keys are errors, and every error names the file, the key and the fix.
//!
//! ```toml
//! [agent]
//! type = "monitor"                     # the agent type this plugin registers
//! description = "Monitor agent"        # reported by agent_metadata
//! component = "monitor.wasm"           # path of the component, relative to this file
//! subscriptions = [{ topic_type = "progress" }, { topic_prefix = "alerts." }]
//! handles = ["ProgressEvent"]          # optional: checked against the component at load time
//! agents_per_instance = 1              # >1: up to this many agents share one instance (below)
//!
//! [limits]                             # all optional; the defaults are below
//! memory_mb = 64                       # linear memory per instance
//! time_ms = 5000                       # wall-clock time per message, nested calls included
//! fuel = 10000000                      # instructions per message (needs a host with fuel on)
//! message_bytes = 1048576              # largest message sent, published or answered
//! instances = 10000                    # most live agents of this type
//! mailbox = 4096                       # most messages waiting for one agent
//!
//! [capabilities]                       # deny by default: nothing is allowed unless listed
//! send = ["echo", "billing"]           # agent types it may send to ("*" for any)
//! publish = ["progress", "alerts.*"]   # topic types it may publish to ("prefix*" patterns)
//! subscribe = ["progress"]             # topic types its subscriptions may name
//! filesystem = { host = "data", guest = "/data", read_only = true }  # one preopened directory
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warren_core::{AgentType, Subscription, TopicId};

/// A parsed, validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[agent]` table.
    pub agent: AgentSection,
    /// The `[limits]` table.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The `[capabilities]` table.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Default linear memory per instance, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// Default time per message, in milliseconds.
pub const DEFAULT_TIME_MS: u64 = 5_000;
/// Default largest message, in bytes.
pub const DEFAULT_MESSAGE_BYTES: u64 = 1 << 20;
/// Default most live agents of one type.
pub const DEFAULT_INSTANCES: u64 = 10_000;

/// Resource limits of one agent type. Unset values take the defaults above (and never exceed a
/// tenant's ceilings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Linear memory per instance, in MiB (default 64).
    pub memory_mb: Option<u64>,
    /// Wall-clock time per message in milliseconds, nested calls included (default 5000).
    pub time_ms: Option<u64>,
    /// Fuel (roughly, wasm instructions) per message; needs a host with fuel metering on.
    pub fuel: Option<u64>,
    /// Largest message sent, published or answered, in bytes (default 1 MiB).
    pub message_bytes: Option<u64>,
    /// Most live agents of this type (default 10000).
    pub instances: Option<u64>,
    /// Most messages waiting for one agent (default 4096).
    pub mailbox: Option<u64>,
}

/// What a plugin may do beyond handling its own messages. Everything is denied unless listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Agent types it may send to; `"*"` allows any, `"pre*"` any type starting with `pre`.
    #[serde(default)]
    pub send: Vec<String>,
    /// Topic types it may publish to (same patterns).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic types (or prefixes) its subscriptions may name (same patterns).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// One host directory preopened for the guest; without it the guest has no filesystem.
    pub filesystem: Option<FilesystemGrant>,
}

/// A preopened directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemGrant {
    /// The host directory, relative to the manifest.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// Read-only unless set to false.
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

/// Whether `name` matches one of `patterns` (`*`, `prefix*` or an exact name).
pub fn allowed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The `[agent]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The agent type the plugin registers (`^[\w\-\.]+$`).
    #[serde(rename = "type")]
    pub agent_type: String,
    /// Free text reported by `agent_metadata`; the component's own description is used when empty.
    #[serde(default)]
    pub description: String,
    /// The component file, relative to the manifest.
    pub component: PathBuf,
    /// Topics this agent type subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Message types the component must handle; checked at load time when given.
    #[serde(default)]
    pub handles: Vec<String>,
    /// How many agents of this type one component instance may host (default 1: every agent
    /// has an instance of its own). Above 1, agents are placed into shared instances in order of
    /// creation: a new agent costs a slot in an existing instance instead of an instantiation,
    /// and memory per agent drops to what its state needs. What they give up: they share the
    /// instance's memory limit, run one at a time, and a trap in one resets every agent of the
    /// instance to its last saved or loaded state. Only for components that import nothing that
    /// waits (no `send` or `publish`, no files), so an agent never holds a shared instance while
    /// it waits for another agent; and the component must declare it can (`multi-agent`, as
    /// every component built with the Warren guest SDK does).
    pub agents_per_instance: Option<u32>,
}

/// Most agents one shared instance may host (`agent.agents_per_instance`).
pub const MAX_AGENTS_PER_INSTANCE: u32 = 1 << 16;

/// One subscription: exactly one of `topic_type` (exact match) or `topic_prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Subscribe to topics of exactly this type; topic `(T, s)` goes to agent `(type, s)`.
    pub topic_type: Option<String>,
    /// Subscribe to every topic type starting with this prefix.
    pub topic_prefix: Option<String>,
}

/// A manifest problem: the file, the key at fault, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The key at fault (`agent.type`), or `<file>` for the whole file.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}; {}",
            self.file.display(),
            self.key,
            self.problem,
            self.fix
        )
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Reads and validates a manifest file. Returns every problem found, not just the first.
    pub fn load(path: &Path) -> Result<Self, Vec<ManifestError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ManifestError {
                file: path.to_owned(),
                key: "<file>".into(),
                problem: format!("cannot read it: {e}"),
                fix: "check the path and permissions".into(),
            }]
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates manifest text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<ManifestError>> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let key = e
                .message()
                .split('`')
                .nth(1)
                .map(|k| k.to_owned())
                .unwrap_or_else(|| "<file>".into());
            vec![ManifestError {
                file: path.to_owned(),
                key,
                problem: e.message().trim().to_owned(),
                fix: "see the manifest format in the README (tables: [agent], [limits], [capabilities])".into(),
            }]
        })?;
        let errors = manifest.validate(path);
        if errors.is_empty() {
            Ok(manifest)
        } else {
            Err(errors)
        }
    }

    fn validate(&self, path: &Path) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        let mut err = |key: String, problem: String, fix: String| {
            errors.push(ManifestError {
                file: path.to_owned(),
                key,
                problem,
                fix,
            })
        };
        if let Err(e) = AgentType::new(&self.agent.agent_type) {
            err(
                "agent.type".into(),
                e.to_string(),
                "use only letters, digits, `_`, `-` and `.`".into(),
            );
        }
        if self.agent.component.as_os_str().is_empty() {
            err(
                "agent.component".into(),
                "is empty".into(),
                "name the component file, e.g. `component = \"echo.wasm\"`".into(),
            );
        }
        for (i, s) in self.agent.subscriptions.iter().enumerate() {
            let key = format!("agent.subscriptions[{i}]");
            // What the subscription needs from `capabilities.subscribe`, as a pattern.
            let wanted = match (&s.topic_type, &s.topic_prefix) {
                (Some(t), None) => {
                    if let Err(e) = TopicId::new(t, "x") {
                        err(
                            key,
                            e.to_string(),
                            "use only letters, digits, `_`, `-`, `.`, `:` and `=`".into(),
                        );
                        continue;
                    }
                    t.clone()
                }
                (None, Some(p)) => format!("{p}*"),
                _ => {
                    err(
                        key,
                        "needs exactly one of `topic_type` or `topic_prefix`".into(),
                        "write `{ topic_type = \"news\" }` or `{ topic_prefix = \"news.\" }`"
                            .into(),
                    );
                    continue;
                }
            };
            if !allowed(&self.capabilities.subscribe, &wanted) {
                err(
                    key,
                    format!(
                        "subscribes to `{wanted}`, which `capabilities.subscribe` does not allow"
                    ),
                    format!(
                        "add \"{wanted}\" to `subscribe` under [capabilities], or remove the subscription"
                    ),
                );
            }
        }
        if let Some(n) = self.agent.agents_per_instance
            && !(1..=MAX_AGENTS_PER_INSTANCE).contains(&n)
        {
            err(
                "agent.agents_per_instance".into(),
                format!("is {n}"),
                format!(
                    "use 1 (an instance per agent) up to {MAX_AGENTS_PER_INSTANCE}, or remove the key"
                ),
            );
        }
        for (key, v) in [
            ("limits.memory_mb", self.limits.memory_mb),
            ("limits.time_ms", self.limits.time_ms),
            ("limits.fuel", self.limits.fuel),
            ("limits.message_bytes", self.limits.message_bytes),
            ("limits.instances", self.limits.instances),
            ("limits.mailbox", self.limits.mailbox),
        ] {
            if v == Some(0) {
                err(
                    key.into(),
                    "is 0".into(),
                    "use a positive value, or remove the key for the default".into(),
                );
            }
        }
        if let Some(fs) = &self.capabilities.filesystem
            && !fs.guest.starts_with('/')
        {
            err(
                "capabilities.filesystem.guest".into(),
                format!("`{}` is not an absolute path", fs.guest),
                "write the guest path as an absolute path, e.g. `/data`".into(),
            );
        }
        errors
    }

    /// The component file this manifest names, resolved against the manifest's own path.
    pub fn component_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.agent.component)
    }

    /// The validated agent type.
    pub fn agent_type(&self) -> AgentType {
        AgentType::new(&self.agent.agent_type).expect("validated on load")
    }

    /// How many agents one instance hosts (`agent.agents_per_instance`, default 1).
    pub fn agents_per_instance(&self) -> u32 {
        self.agent.agents_per_instance.unwrap_or(1)
    }

    /// The subscriptions this manifest declares, for its agent type.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let t = self.agent_type();
        self.agent
            .subscriptions
            .iter()
            .map(|s| match (&s.topic_type, &s.topic_prefix) {
                (Some(topic), _) => Subscription::type_subscription(topic.clone(), t.clone()),
                (_, Some(prefix)) => Subscription::type_prefix(prefix.clone(), t.clone()),
                (None, None) => unreachable!("validated on load"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, Vec<ManifestError>> {
        Manifest::parse(Path::new("p/plugin.toml"), text)
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = parse(
            r#"
            [agent]
            type = "monitor"
            description = "Monitor agent"
            component = "monitor.wasm"
            subscriptions = [{ topic_type = "progress" }, { topic_prefix = "alerts." }]
            handles = ["ProgressEvent"]

            [limits]
            memory_mb = 16
            time_ms = 100

            [capabilities]
            subscribe = ["progress", "alerts.*"]
            send = ["echo"]
            "#,
        )
        .unwrap();
        assert_eq!(m.limits.memory_mb, Some(16));
        assert_eq!(m.agent_type().as_str(), "monitor");
        assert_eq!(m.subscriptions().len(), 2);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = parse("[agent]\ntype = \"x\"\ncomponent = \"x.wasm\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e[0].key, "colour", "{}", e[0]);
        let e = parse("[agent]\ntype = 5\ncomponent = \"x.wasm\"\n").unwrap_err();
        assert!(e[0].to_string().contains("p/plugin.toml"), "{}", e[0]);
        assert!(e[0].problem.contains("invalid type"), "{}", e[0]);
    }

    #[test]
    fn every_validation_problem_is_reported() {
        let e = parse(
            "[agent]\ntype = \"bad type\"\ncomponent = \"\"\nsubscriptions = [{ topic_type = \"a b\" }, {}]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "agent.type",
                "agent.component",
                "agent.subscriptions[0]",
                "agent.subscriptions[1]"
            ]
        );
    }

    #[test]
    fn subscriptions_need_a_capability_and_limits_must_be_positive() {
        let e = parse(
            "[agent]\ntype = \"m\"\ncomponent = \"m.wasm\"\nsubscriptions = [{ topic_type = \"secrets\" }]\n[limits]\ntime_ms = 0\n",
        )
        .unwrap_err();
        assert_eq!(e[0].key, "agent.subscriptions[0]");
        assert!(e[0].fix.contains("\"secrets\""), "{}", e[0]);
        assert_eq!(e[1].key, "limits.time_ms");
    }

    #[test]
    fn agents_per_instance_defaults_to_one_and_must_be_in_range() {
        let base = "[agent]\ntype = \"m\"\ncomponent = \"m.wasm\"\n";
        assert_eq!(parse(base).unwrap().agents_per_instance(), 1);
        let m = parse(&format!("{base}agents_per_instance = 256\n")).unwrap();
        assert_eq!(m.agents_per_instance(), 256);
        for bad in [0, MAX_AGENTS_PER_INSTANCE + 1] {
            let e = parse(&format!("{base}agents_per_instance = {bad}\n")).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].key, "agent.agents_per_instance");
            assert!(e[0].problem.contains(&bad.to_string()), "{}", e[0]);
        }
    }

    #[test]
    fn capability_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allowed(&p(&["*"]), "anything"));
        assert!(allowed(&p(&["alerts.*"]), "alerts.fire"));
        assert!(!allowed(&p(&["alerts.*"]), "alert"));
        assert!(allowed(&p(&["echo"]), "echo") && !allowed(&p(&["echo"]), "echo2"));
        assert!(!allowed(&[], "echo"), "deny by default");
    }
}
