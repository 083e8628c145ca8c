//! The gRPC face of [`ChatStore`]: every method needs an access token (the
//! interceptor checks it), and the caller is the token's player. This is the
//! boundary: requests are parsed into domain values (a [`ChannelRef`], a
//! [`Duration`]) here, and the store's answers become protobuf messages here.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::channel::{ChannelRef, JoinedChannel};
use super::message::{ChatMessage, ChatUser, HistoryPage};
use super::store::ChatStore;
use super::subscription::SubscribeItem;
use crate::db::db_id;
use crate::error::LobbyError;
use crate::idempotency::IdempotencyKey;
use crate::page_token;
use crate::proto::chat::{self as pb, chat_server};
use crate::tokens::require_caller;

/// The Chat service.
#[derive(Debug, Clone)]
pub struct ChatService {
    store: ChatStore,
}

impl ChatService {
    pub(crate) fn new(store: ChatStore) -> Self {
        Self { store }
    }
}

impl ChatService {
    /// The caller, who thereby counts as online.
    fn user<T>(&self, request: &Request<T>) -> Result<ChatUser, LobbyError> {
        let (id, claims) = require_caller(request)?;
        self.store.presence().touch(id);
        Ok(ChatUser { id, name: claims.name })
    }
}

/// The channel a Join names, as `user` sees it.
fn join_target(user: &ChatUser, target: Option<pb::join_request::Target>) -> Result<ChannelRef, LobbyError> {
    use pb::join_request::Target;
    match target {
        None => Err(LobbyError::invalid("target", "set one of public_name, direct_with or channel_id")),
        Some(Target::PublicName(name)) => ChannelRef::public(&name),
        Some(Target::DirectWith(other)) => ChannelRef::direct(user.id, other),
        Some(Target::ChannelId(id)) => ChannelRef::parse(&id),
    }
}

fn wire_kind(channel: &ChannelRef) -> pb::ChannelKind {
    match channel {
        ChannelRef::Public(_) => pb::ChannelKind::Public,
        ChannelRef::Match(_) => pb::ChannelKind::Match,
        ChannelRef::Direct { .. } => pb::ChannelKind::Direct,
    }
}

fn wire_channel(viewer: &ChatUser, joined: JoinedChannel) -> pb::Channel {
    pb::Channel {
        channel_id: joined.channel.id(),
        kind: wire_kind(&joined.channel) as i32,
        name: joined.channel.display_name(viewer.id),
        last_message_id: joined.last_message_id,
    }
}

impl From<ChatMessage> for pb::ChatMessage {
    fn from(message: ChatMessage) -> Self {
        Self {
            channel_id: message.channel_id,
            message_id: message.message_id,
            sender_id: message.sender_id,
            sender_name: message.sender_name,
            body: message.body,
            sent_at_ms: message.sent_at_ms,
        }
    }
}

/// The scope a History page token is bound to: the channel and the viewer
/// (whose blocks shape the pages).
fn history_scope(viewer: &ChatUser, channel: &ChannelRef) -> String {
    format!("chat.history:{}:{}", channel.id(), viewer.id)
}

fn wire_history(scope: &str, page: HistoryPage) -> pb::HistoryResponse {
    let next_page_token = match page.next_before_id {
        0 => String::new(),
        before_id => page_token::encode(scope, &[db_id(before_id)]),
    };
    pb::HistoryResponse { messages: page.messages.into_iter().map(pb::ChatMessage::from).collect(), next_page_token }
}

/// One Subscribe stream item on the wire.
fn wire_item(item: SubscribeItem) -> Result<pb::ChatMessage, Status> {
    item.map(pb::ChatMessage::from).map_err(Status::from)
}

#[tonic::async_trait]
impl chat_server::Chat for ChatService {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::ChatMessage, Status>> + Send>>;

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::Channel>, Status> {
        let user = self.user(&request)?;
        let channel = join_target(&user, request.into_inner().target)?;
        let joined = self.store.join(&user, channel).await?;
        Ok(Response::new(wire_channel(&user, joined)))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        let user = self.user(&request)?;
        let channel = ChannelRef::parse(&request.get_ref().channel_id)?;
        self.store.leave(&user, &channel).await?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn send(&self, request: Request<pb::SendRequest>) -> Result<Response<pb::ChatMessage>, Status> {
        let user = self.user(&request)?;
        let request = request.get_ref();
        let channel = ChannelRef::parse(&request.channel_id)?;
        let key = IdempotencyKey::parse(&request.idempotency_key)?;
        let message = self.store.send(&user, &channel, &request.body, key.as_ref()).await?;
        Ok(Response::new(message.into()))
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryResponse>, Status> {
        let user = self.user(&request)?;
        let request = request.get_ref();
        let channel = ChannelRef::parse(&request.channel_id)?;
        let scope = history_scope(&user, &channel);
        let before_id = match page_token::decode::<1>(&request.page_token, &scope)? {
            None => 0,
            Some([before_id]) => u64::try_from(before_id).ok().filter(|id| *id > 0).ok_or_else(|| {
                LobbyError::invalid("page_token", "is not a token this server issued; pass empty for the first page")
            })?,
        };
        let page = self.store.history(&user, &channel, before_id, request.page_size).await?;
        Ok(Response::new(wire_history(&scope, page)))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = self.user(&request)?;
        let request = request.get_ref();
        let channel = ChannelRef::parse(&request.channel_id)?;
        let rx = self.store.subscribe(&user, &channel, request.after_id).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(wire_item))))
    }

    async fn block(&self, request: Request<pb::BlockRequest>) -> Result<Response<pb::BlockResponse>, Status> {
        let user = self.user(&request)?;
        self.store.set_blocked(&user, request.get_ref().player_id, true).await?;
        Ok(Response::new(pb::BlockResponse {}))
    }

    async fn unblock(&self, request: Request<pb::BlockRequest>) -> Result<Response<pb::BlockResponse>, Status> {
        let user = self.user(&request)?;
        self.store.set_blocked(&user, request.get_ref().player_id, false).await?;
        Ok(Response::new(pb::BlockResponse {}))
    }

    async fn mute(&self, request: Request<pb::MuteRequest>) -> Result<Response<pb::MuteResponse>, Status> {
        let user = self.user(&request)?;
        let request = request.get_ref();
        let duration = Duration::from_millis(request.duration_ms);
        let muted_until_ms = self.store.mute(&user, request.player_id, duration, &request.reason).await?;
        Ok(Response::new(pb::MuteResponse { muted_until_ms }))
    }

    async fn unmute(&self, request: Request<pb::UnmuteRequest>) -> Result<Response<pb::MuteResponse>, Status> {
        let user = self.user(&request)?;
        self.store.unmute(&user, request.get_ref().player_id).await?;
        Ok(Response::new(pb::MuteResponse { muted_until_ms: 0 }))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let user = self.user(&request)?;
        let request = request.get_ref();
        let channel = ChannelRef::parse(&request.channel_id)?;
        let created = self.store.report(&user, &channel, request.message_id, &request.reason).await?;
        Ok(Response::new(pb::ReportResponse { created }))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        self.user(&request)?;
        let player_ids = &request.get_ref().player_ids;
        let online = self.store.presence().online(player_ids).await?;
        let players = player_ids
            .iter()
            .zip(online)
            .map(|(player_id, online)| pb::PlayerPresence { player_id: *player_id, online })
            .collect();
        Ok(Response::new(pb::GetPresenceResponse { players }))
    }
}
