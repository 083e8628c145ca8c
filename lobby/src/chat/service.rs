//! The gRPC face of [`ChatStore`]: every method needs an access token (the
//! interceptor checks it), and the caller is the token's player.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::store::{ChatStore, ChatUser};
use super::subscription::SubscribeItem;
use crate::error::LobbyError;
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

fn user<T>(request: &Request<T>) -> Result<ChatUser, LobbyError> {
    let (id, claims) = require_caller(request)?;
    Ok(ChatUser { id, name: claims.name })
}

#[tonic::async_trait]
impl chat_server::Chat for ChatService {
    type SubscribeStream = ReceiverStream<SubscribeItem>;

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::Channel>, Status> {
        let user = user(&request)?;
        Ok(Response::new(self.store.join(&user, request.into_inner().target).await?))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        let user = user(&request)?;
        self.store.leave(&user, &request.get_ref().channel_id).await?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn send(&self, request: Request<pb::SendRequest>) -> Result<Response<pb::ChatMessage>, Status> {
        let user = user(&request)?;
        let request = request.get_ref();
        Ok(Response::new(self.store.send(&user, &request.channel_id, &request.body).await?))
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryResponse>, Status> {
        let user = user(&request)?;
        Ok(Response::new(self.store.history(&user, request.get_ref()).await?))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = user(&request)?;
        let request = request.get_ref();
        let rx = self.store.subscribe(&user, &request.channel_id, request.after_id).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn block(&self, request: Request<pb::BlockRequest>) -> Result<Response<pb::BlockResponse>, Status> {
        let user = user(&request)?;
        self.store.set_blocked(&user, request.get_ref().player_id, true).await?;
        Ok(Response::new(pb::BlockResponse {}))
    }

    async fn unblock(&self, request: Request<pb::BlockRequest>) -> Result<Response<pb::BlockResponse>, Status> {
        let user = user(&request)?;
        self.store.set_blocked(&user, request.get_ref().player_id, false).await?;
        Ok(Response::new(pb::BlockResponse {}))
    }

    async fn mute(&self, request: Request<pb::MuteRequest>) -> Result<Response<pb::MuteResponse>, Status> {
        let user = user(&request)?;
        let muted_until_ms = self.store.mute(&user, request.get_ref()).await?;
        Ok(Response::new(pb::MuteResponse { muted_until_ms }))
    }

    async fn unmute(&self, request: Request<pb::UnmuteRequest>) -> Result<Response<pb::MuteResponse>, Status> {
        let user = user(&request)?;
        self.store.unmute(&user, request.get_ref().player_id).await?;
        Ok(Response::new(pb::MuteResponse { muted_until_ms: 0 }))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let user = user(&request)?;
        let created = self.store.report(&user, request.get_ref()).await?;
        Ok(Response::new(pb::ReportResponse { created }))
    }
}
