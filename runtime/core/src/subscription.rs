//! Subscriptions map topics to agents: [`Subscription`] and the [`SubscriptionManager`] behind
//! `add_subscription`, `remove_subscription` and publish routing.
//!
//! The two kinds are AutoGen's: a type subscription matches one topic type exactly and maps topic
//! `(T, s)` to agent `(A, s)`; a prefix subscription matches every topic type that starts with a
//! prefix. They form a closed enum because they are also what the distributed protocol can carry.
//!
//! Publish routing is the hot path, so recipients are cached per topic and the cache is cleared on
//! every add or remove (AutoGen rebuilds it the same way). Unlike AutoGen, the recipient list is
//! **deduplicated**: two subscriptions mapping one topic to the same agent deliver once, not twice.

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::Error;
use crate::id::{AgentId, AgentType, DEFAULT_TOPIC_TYPE, SubscriptionId, TopicId};

/// A rule that routes published messages to agents.
#[derive(Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Matches topics whose type equals `topic_type`; maps `(topic_type, s)` to `(agent_type, s)`.
    Type {
        /// The subscription's id.
        id: SubscriptionId,
        /// The exact topic type matched.
        topic_type: String,
        /// The agent type that receives matching messages.
        agent_type: AgentType,
    },
    /// Matches topics whose type starts with `prefix` (an empty prefix matches every topic).
    TypePrefix {
        /// The subscription's id.
        id: SubscriptionId,
        /// The topic type prefix matched.
        prefix: String,
        /// The agent type that receives matching messages.
        agent_type: AgentType,
    },
}

impl Subscription {
    /// AutoGen's `TypeSubscription(topic_type, agent_type)` with a generated id.
    pub fn type_subscription(topic_type: impl Into<String>, agent_type: AgentType) -> Self {
        Self::Type {
            id: SubscriptionId::generate(),
            topic_type: topic_type.into(),
            agent_type,
        }
    }

    /// AutoGen's `TypePrefixSubscription(prefix, agent_type)` with a generated id.
    pub fn type_prefix(prefix: impl Into<String>, agent_type: AgentType) -> Self {
        Self::TypePrefix {
            id: SubscriptionId::generate(),
            prefix: prefix.into(),
            agent_type,
        }
    }

    /// AutoGen's `DefaultSubscription(agent_type=...)`: a type subscription to topic type `default`.
    /// In Rust the agent type is always explicit, so there is no "outside a register context" error.
    pub fn default_for(agent_type: AgentType) -> Self {
        Self::type_subscription(DEFAULT_TOPIC_TYPE, agent_type)
    }

    /// The direct-message subscription `TypePrefix("<type>:", type)` that registration adds.
    pub fn direct_message(agent_type: AgentType) -> Self {
        Self::type_prefix(format!("{agent_type}:"), agent_type)
    }

    /// Replaces the generated id with a caller-chosen one.
    pub fn with_id(mut self, new_id: SubscriptionId) -> Self {
        match &mut self {
            Self::Type { id, .. } | Self::TypePrefix { id, .. } => *id = new_id,
        }
        self
    }

    /// The subscription's id.
    pub fn id(&self) -> &SubscriptionId {
        match self {
            Self::Type { id, .. } | Self::TypePrefix { id, .. } => id,
        }
    }

    /// The agent type that receives matching messages.
    pub fn agent_type(&self) -> &AgentType {
        match self {
            Self::Type { agent_type, .. } | Self::TypePrefix { agent_type, .. } => agent_type,
        }
    }

    /// Whether `topic` is routed by this subscription.
    pub fn is_match(&self, topic: &TopicId) -> bool {
        match self {
            Self::Type { topic_type, .. } => topic.topic_type() == topic_type,
            Self::TypePrefix { prefix, .. } => topic.topic_type().starts_with(prefix.as_str()),
        }
    }

    /// The agent that receives `topic`, or [`Error::SubscriptionMismatch`] if it does not match.
    pub fn map_to_agent(&self, topic: &TopicId) -> Result<AgentId, Error> {
        if !self.is_match(topic) {
            return Err(Error::SubscriptionMismatch {
                subscription: self.to_string(),
                topic: topic.clone(),
            });
        }
        Ok(AgentId::from_parts(
            self.agent_type().clone(),
            topic.source(),
        ))
    }

    /// AutoGen's equality: same id, or same kind with the same agent type and topic type/prefix.
    pub fn equivalent(&self, other: &Subscription) -> bool {
        if self.id() == other.id() {
            return true;
        }
        match (self, other) {
            (
                Self::Type {
                    topic_type: a,
                    agent_type: x,
                    ..
                },
                Self::Type {
                    topic_type: b,
                    agent_type: y,
                    ..
                },
            ) => a == b && x == y,
            (
                Self::TypePrefix {
                    prefix: a,
                    agent_type: x,
                    ..
                },
                Self::TypePrefix {
                    prefix: b,
                    agent_type: y,
                    ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type {
                id,
                topic_type,
                agent_type,
            } => write!(f, "TypeSubscription({topic_type} -> {agent_type}, id {id})"),
            Self::TypePrefix {
                id,
                prefix,
                agent_type,
            } => write!(
                f,
                "TypePrefixSubscription({prefix}* -> {agent_type}, id {id})"
            ),
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Beyond this many distinct cached topics the cache is cleared instead of growing without bound
/// (a publisher that uses a fresh source per message would otherwise leak memory).
const MAX_CACHED_TOPICS: usize = 16_384;

/// The subscription table and the per-topic recipient cache.
#[derive(Debug, Default)]
pub struct SubscriptionManager {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    subscriptions: Vec<Subscription>,
    cache: crate::runtime::FastMap<TopicId, Arc<[AgentId]>>,
}

impl SubscriptionManager {
    /// Adds a subscription. An equivalent one (see [`Subscription::equivalent`]) is rejected.
    pub fn add(&self, subscription: Subscription) -> Result<(), Error> {
        let mut inner = self.inner.write();
        if let Some(existing) = inner
            .subscriptions
            .iter()
            .find(|s| s.equivalent(&subscription))
        {
            return Err(Error::SubscriptionExists {
                subscription: subscription.to_string(),
                existing: existing.to_string(),
            });
        }
        inner.subscriptions.push(subscription);
        inner.cache.clear();
        Ok(())
    }

    /// Removes a subscription by id; an unknown id is [`Error::UnknownSubscription`].
    pub fn remove(&self, id: &SubscriptionId) -> Result<Subscription, Error> {
        let mut inner = self.inner.write();
        let pos = inner
            .subscriptions
            .iter()
            .position(|s| s.id() == id)
            .ok_or_else(|| Error::UnknownSubscription { id: id.clone() })?;
        inner.cache.clear();
        Ok(inner.subscriptions.remove(pos))
    }

    /// All subscriptions in insertion order.
    pub fn list(&self) -> Vec<Subscription> {
        self.inner.read().subscriptions.clone()
    }

    /// The distinct agents that receive `topic`, in subscription order.
    pub fn recipients(&self, topic: &TopicId) -> Arc<[AgentId]> {
        if let Some(hit) = self.inner.read().cache.get(topic) {
            return hit.clone();
        }
        let mut inner = self.inner.write();
        if let Some(hit) = inner.cache.get(topic) {
            return hit.clone();
        }
        let mut out: Vec<AgentId> = Vec::new();
        for s in &inner.subscriptions {
            if s.is_match(topic) {
                let id = AgentId::from_parts(s.agent_type().clone(), topic.source());
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        let out: Arc<[AgentId]> = out.into();
        if inner.cache.len() >= MAX_CACHED_TOPICS {
            inner.cache.clear();
        }
        inner.cache.insert(topic.clone(), out.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> AgentType {
        AgentType::new(s).unwrap()
    }
    fn topic(t: &str, s: &str) -> TopicId {
        TopicId::new(t, s).unwrap()
    }

    #[test]
    fn type_subscription_matches_and_maps() {
        let s = Subscription::type_subscription("t1", at("a1"));
        assert!(!s.is_match(&topic("t0", "s1")));
        assert!(s.is_match(&topic("t1", "s1")));
        assert!(s.is_match(&topic("t1", "s2")));
        assert_eq!(
            s.map_to_agent(&topic("t1", "s1")).unwrap(),
            AgentId::new("a1", "s1").unwrap()
        );
        assert!(matches!(
            s.map_to_agent(&topic("t0", "s1")),
            Err(Error::SubscriptionMismatch { .. })
        ));
    }

    #[test]
    fn prefix_subscription_matches_prefixes_and_empty_matches_all() {
        let s = Subscription::type_prefix("t1", at("a1"));
        assert!(s.is_match(&topic("t1", "x")));
        assert!(s.is_match(&topic("t1SUFFIX", "x")));
        assert!(!s.is_match(&topic("t0", "x")));
        let all = Subscription::type_prefix("", at("a1"));
        assert!(all.is_match(&topic("anything:at=all", "x")));
    }

    #[test]
    fn equivalence_rules() {
        let a = Subscription::type_subscription("default", at("MyAgent"));
        let b = Subscription::type_subscription("default", at("MyAgent"));
        assert_ne!(a.id(), b.id());
        assert!(a.equivalent(&b));
        assert!(a.equivalent(&Subscription::default_for(at("MyAgent"))));
        let p = Subscription::type_prefix("default", at("MyAgent"));
        assert!(
            !a.equivalent(&p),
            "a type subscription never equals a prefix one"
        );
        let same_id = Subscription::type_prefix("zzz", at("Other")).with_id(a.id().clone());
        assert!(a.equivalent(&same_id));
    }

    #[test]
    fn manager_dedupes_recipients_and_invalidates_cache() {
        let m = SubscriptionManager::default();
        m.add(Subscription::type_subscription("news", at("a")))
            .unwrap();
        m.add(Subscription::type_prefix("ne", at("a"))).unwrap();
        let r = m.recipients(&topic("news", "s"));
        assert_eq!(&*r, &[AgentId::new("a", "s").unwrap()]);
        let extra = Subscription::type_subscription("news", at("b"));
        let extra_id = extra.id().clone();
        m.add(extra).unwrap();
        assert_eq!(m.recipients(&topic("news", "s")).len(), 2);
        m.remove(&extra_id).unwrap();
        assert_eq!(m.recipients(&topic("news", "s")).len(), 1);
        let err = m.remove(&SubscriptionId::new("nonexistent")).unwrap_err();
        assert!(err.to_string().contains("nonexistent"));
    }
}
