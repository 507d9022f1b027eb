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
}

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
                fix: "see the manifest format in the README (keys: agent.type, agent.description, agent.component, agent.subscriptions, agent.handles)".into(),
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
        let mut err = |key: String, problem: String, fix: &str| {
            errors.push(ManifestError {
                file: path.to_owned(),
                key,
                problem,
                fix: fix.to_owned(),
            })
        };
        if let Err(e) = AgentType::new(&self.agent.agent_type) {
            err(
                "agent.type".into(),
                e.to_string(),
                "use only letters, digits, `_`, `-` and `.`",
            );
        }
        if self.agent.component.as_os_str().is_empty() {
            err(
                "agent.component".into(),
                "is empty".into(),
                "name the component file, e.g. `component = \"echo.wasm\"`",
            );
        }
        for (i, s) in self.agent.subscriptions.iter().enumerate() {
            let key = format!("agent.subscriptions[{i}]");
            match (&s.topic_type, &s.topic_prefix) {
                (Some(t), None) => {
                    if let Err(e) = TopicId::new(t, "x") {
                        err(
                            key,
                            e.to_string(),
                            "use only letters, digits, `_`, `-`, `.`, `:` and `=`",
                        );
                    }
                }
                (None, Some(_)) => {}
                _ => err(
                    key,
                    "needs exactly one of `topic_type` or `topic_prefix`".into(),
                    "write `{ topic_type = \"news\" }` or `{ topic_prefix = \"news.\" }`",
                ),
            }
        }
        errors
    }

    /// The validated agent type.
    pub fn agent_type(&self) -> AgentType {
        AgentType::new(&self.agent.agent_type).expect("validated on load")
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
            "#,
        )
        .unwrap();
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
}
