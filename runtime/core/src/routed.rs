//! Typed handlers per message type, without boilerplate (AutoGen's `RoutedAgent` with `@rpc`,
//! `@event` and `@message_handler`).
//!
//! An agent type implements [`RoutedAgent`] and declares its handlers once in
//! [`RoutedAgent::routes`]; the table is built once per registered agent type and shared by every
//! instance. Routing picks, in **declaration order**, the first handler whose message type matches,
//! whose kind matches (`rpc` handlers see only sends, `event` handlers only publishes, `message`
//! handlers both) and whose optional predicate accepts the message. AutoGen orders by method name
//! alphabetically; declaration order says the same thing without depending on names.
//!
//! ```
//! use warren_core::{BoxError, MessageContext, RoutedAgent, Routes};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Ping { i: i64 }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Pong { i: i64 }
//! struct Echo;
//! impl RoutedAgent for Echo {
//!     fn routes(r: &mut Routes<Self>) {
//!         // A synchronous handler: no future to allocate.
//!         r.rpc_sync(|_me: &mut Echo, m: &Ping, _ctx| Ok::<_, BoxError>(Pong { i: m.i }));
//!     }
//! }
//! ```
//!
//! Messages arrive either as native values (no decoding) or as payloads from wasm agents; a payload
//! is decoded once, into the handler's own type, only when its type name matches.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::{Agent, MessageContext};
use crate::error::{BoxError, Error};
use crate::message::{Message, MessageSerializer, decode_bytes, type_name_of};
use crate::state::AgentState;
use crate::subscription::Subscription;
use crate::{AgentType, JsonSerializer};

/// An agent described by a table of typed handlers. Register it with
/// [`crate::AgentRuntime::register_routed`].
pub trait RoutedAgent: Send + Sized + 'static {
    /// Declares this type's handlers. Called once per registration.
    fn routes(routes: &mut Routes<Self>);

    /// The description reported by `agent_metadata`.
    fn description(&self) -> String {
        String::new()
    }

    /// Subscriptions added when the type is registered (AutoGen's class subscriptions such as
    /// `@default_subscription`). The default is none.
    fn subscriptions(agent_type: &AgentType) -> Vec<Subscription> {
        let _ = agent_type;
        Vec::new()
    }

    /// The agent's state (see [`Agent::save_state`]). The default is `{}`.
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::default())
    }

    /// Restores state from [`RoutedAgent::save_state`]. The default ignores it.
    fn load_state(&mut self, state: AgentState) -> Result<(), BoxError> {
        let _ = state;
        Ok(())
    }

    /// Called when no handler matches. The default returns [`Error::CantHandle`]; the runtime
    /// logs that at INFO for a publish and returns it to the caller of a send.
    fn on_unhandled(&mut self, message: &Message, ctx: &MessageContext) -> Result<Message, Error> {
        Err(Error::CantHandle {
            agent: ctx.agent_id().clone(),
            message_type: message.type_name(),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rpc,
    Event,
    Any,
}

type Call<A> = Box<
    dyn for<'a> Fn(
            &'a mut A,
            &'a (dyn Any + Send + Sync),
            &'a MessageContext,
        ) -> BoxFuture<'a, Result<Message, BoxError>>
        + Send
        + Sync,
>;
type SyncCall<A> = Box<
    dyn Fn(&mut A, &(dyn Any + Send + Sync), &MessageContext) -> Result<Message, BoxError>
        + Send
        + Sync,
>;
type Matcher = Box<dyn Fn(&(dyn Any + Send + Sync), &MessageContext) -> bool + Send + Sync>;
/// Decodes (type name, content type, bytes) into a route's type.
type Decode = fn(&str, &str, &[u8]) -> Result<Arc<dyn Any + Send + Sync>, Error>;

enum Callable<A> {
    Async(Call<A>),
    Sync(SyncCall<A>),
}

struct Route<A> {
    type_id: TypeId,
    type_name: String,
    kind: Kind,
    matcher: Option<Matcher>,
    call: Callable<A>,
    decode: Decode,
}

/// The handler table of one [`RoutedAgent`] type.
pub struct Routes<A> {
    routes: Vec<Route<A>>,
    serializers: Vec<Arc<dyn MessageSerializer>>,
}

impl<A> fmt::Debug for Routes<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| (&r.type_name, r.kind)))
            .finish()
    }
}

/// Returned by the `Routes` methods to add a predicate to the handler just declared.
#[derive(Debug)]
pub struct RouteBuilder<'r, A, T> {
    routes: &'r mut Routes<A>,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<A, T: Any + Send + Sync> RouteBuilder<'_, A, T> {
    /// Runs the handler only when `pred` accepts the message (AutoGen's `match=`).
    pub fn when(self, pred: impl Fn(&T, &MessageContext) -> bool + Send + Sync + 'static) {
        let route = self
            .routes
            .routes
            .last_mut()
            .expect("a route was just added");
        route.matcher = Some(Box::new(move |v, ctx| {
            v.downcast_ref::<T>().is_some_and(|t| pred(t, ctx))
        }));
    }
}

fn decode_arc<T: DeserializeOwned + Send + Sync + 'static>(
    type_name: &str,
    content_type: &str,
    data: &[u8],
) -> Result<Arc<dyn Any + Send + Sync>, Error> {
    Ok(Arc::new(decode_bytes::<T>(type_name, content_type, data)?))
}

fn downcast<T: 'static>(v: &(dyn Any + Send + Sync)) -> &T {
    v.downcast_ref::<T>()
        .expect("the router checked the message type before calling the handler")
}

impl<A: Send + 'static> Routes<A> {
    fn new() -> Self {
        Self {
            routes: Vec::new(),
            serializers: Vec::new(),
        }
    }

    fn push<T, R>(&mut self, kind: Kind, call: Callable<A>) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.serializers.push(Arc::new(JsonSerializer::<T>::new()));
        if TypeId::of::<R>() != TypeId::of::<()>() {
            self.serializers.push(Arc::new(JsonSerializer::<R>::new()));
        }
        self.routes.push(Route {
            type_id: TypeId::of::<T>(),
            type_name: type_name_of::<T>(),
            kind,
            matcher: None,
            call,
            decode: decode_arc::<T>,
        });
        RouteBuilder {
            routes: self,
            _t: std::marker::PhantomData,
        }
    }

    fn async_call<T, R, F>(f: F) -> Callable<A>
    where
        T: Send + Sync + 'static,
        R: Serialize + Send + Sync + 'static,
        F: for<'a> Fn(&'a mut A, &'a T, &'a MessageContext) -> BoxFuture<'a, Result<R, BoxError>>
            + Send
            + Sync
            + 'static,
    {
        Callable::Async(Box::new(move |a, v, ctx| {
            let fut = f(a, downcast::<T>(v), ctx);
            Box::pin(async move { fut.await.map(into_message) })
        }))
    }

    fn sync_call<T, R, F>(f: F) -> Callable<A>
    where
        T: Send + Sync + 'static,
        R: Serialize + Send + Sync + 'static,
        F: Fn(&mut A, &T, &MessageContext) -> Result<R, BoxError> + Send + Sync + 'static,
    {
        Callable::Sync(Box::new(move |a, v, ctx| {
            f(a, downcast::<T>(v), ctx).map(into_message)
        }))
    }

    /// An RPC handler (AutoGen's `@rpc`): called for sends of `T`; its `R` is the response.
    pub fn rpc<T, R, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: for<'a> Fn(&'a mut A, &'a T, &'a MessageContext) -> BoxFuture<'a, Result<R, BoxError>>
            + Send
            + Sync
            + 'static,
    {
        self.push::<T, R>(Kind::Rpc, Self::async_call(f))
    }

    /// A synchronous RPC handler: like [`Routes::rpc`] for handlers that do not await.
    pub fn rpc_sync<T, R, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(&mut A, &T, &MessageContext) -> Result<R, BoxError> + Send + Sync + 'static,
    {
        self.push::<T, R>(Kind::Rpc, Self::sync_call(f))
    }

    /// An event handler (AutoGen's `@event`): called for publishes of `T`.
    pub fn event<T, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: for<'a> Fn(&'a mut A, &'a T, &'a MessageContext) -> BoxFuture<'a, Result<(), BoxError>>
            + Send
            + Sync
            + 'static,
    {
        self.push::<T, ()>(Kind::Event, Self::async_call(f))
    }

    /// A synchronous event handler.
    pub fn event_sync<T, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(&mut A, &T, &MessageContext) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        self.push::<T, ()>(Kind::Event, Self::sync_call(f))
    }

    /// A handler for both sends and publishes (AutoGen's `@message_handler`); for a publish its
    /// result is discarded.
    pub fn message<T, R, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: for<'a> Fn(&'a mut A, &'a T, &'a MessageContext) -> BoxFuture<'a, Result<R, BoxError>>
            + Send
            + Sync
            + 'static,
    {
        self.push::<T, R>(Kind::Any, Self::async_call(f))
    }

    /// A synchronous [`Routes::message`] handler.
    pub fn message_sync<T, R, F>(&mut self, f: F) -> RouteBuilder<'_, A, T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(&mut A, &T, &MessageContext) -> Result<R, BoxError> + Send + Sync + 'static,
    {
        self.push::<T, R>(Kind::Any, Self::sync_call(f))
    }

    /// The JSON serializers of every handled message and response type.
    pub(crate) fn serializers(&self) -> &[Arc<dyn MessageSerializer>] {
        &self.serializers
    }

    /// The message type names this agent handles, in declaration order.
    pub fn handled_types(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.type_name.clone()).collect()
    }
}

fn into_message<R: Serialize + Send + Sync + 'static>(r: R) -> Message {
    if TypeId::of::<R>() == TypeId::of::<()>() {
        Message::empty()
    } else {
        Message::new(r)
    }
}

/// Builds the shared handler table of `A`.
pub(crate) fn build_routes<A: RoutedAgent>() -> Arc<Routes<A>> {
    let mut r = Routes::new();
    A::routes(&mut r);
    Arc::new(r)
}

/// The [`Agent`] adapter around a [`RoutedAgent`].
pub(crate) struct Routed<A> {
    pub(crate) agent: A,
    pub(crate) routes: Arc<Routes<A>>,
}

#[async_trait]
impl<A: RoutedAgent> Agent for Routed<A> {
    async fn on_message(
        &mut self,
        message: Message,
        ctx: &MessageContext,
    ) -> Result<Message, Error> {
        let routes = self.routes.clone();
        let native = message.native_type_id();
        // A payload is decoded at most once, into the first route type whose name matches.
        let mut decoded: Option<(TypeId, Arc<dyn Any + Send + Sync>)> = None;
        for route in &routes.routes {
            match route.kind {
                Kind::Rpc if !ctx.is_rpc => continue,
                Kind::Event if ctx.is_rpc => continue,
                _ => {}
            }
            let value: &(dyn Any + Send + Sync) = match native {
                Some(id) if id == route.type_id => message.as_any().expect("native"),
                Some(_) => continue,
                None => {
                    let Some((name, content_type, data)) = message.bytes() else {
                        continue;
                    };
                    if name != route.type_name {
                        continue;
                    }
                    if decoded.as_ref().map(|(id, _)| *id) != Some(route.type_id) {
                        decoded = Some((route.type_id, (route.decode)(name, content_type, data)?));
                    }
                    &*decoded.as_ref().expect("just decoded").1
                }
            };
            if let Some(m) = &route.matcher
                && !m(value, ctx)
            {
                continue;
            }
            let result = match &route.call {
                Callable::Sync(f) => f(&mut self.agent, value, ctx),
                Callable::Async(f) => f(&mut self.agent, value, ctx).await,
            };
            return result.map_err(|source| Error::HandlerFailed {
                agent: ctx.agent_id().clone(),
                message_type: route.type_name.clone(),
                source,
            });
        }
        self.agent.on_unhandled(&message, ctx)
    }

    fn description(&self) -> String {
        self.agent.description()
    }

    async fn save_state(&mut self) -> Result<AgentState, BoxError> {
        self.agent.save_state()
    }

    async fn load_state(&mut self, state: AgentState) -> Result<(), BoxError> {
        self.agent.load_state(state)
    }

    fn underlying(&mut self) -> Option<&mut dyn Any> {
        Some(&mut self.agent)
    }

    fn underlying_type_name(&self) -> &'static str {
        std::any::type_name::<A>()
    }
}
